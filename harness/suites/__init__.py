"""Suites: what to ask the worker and which figures come back. One suite per file, each with a
`measure(pair) -> Measurement`; harness.registry declares them (name, order, headline figure,
when they apply)."""
