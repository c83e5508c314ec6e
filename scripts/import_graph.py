"""Measure the house: import cycles and imports from a lower module to a higher one in harness/.

    .venv/bin/python scripts/import_graph.py            # counts, then every offending import
    .venv/bin/python scripts/import_graph.py --quiet    # counts only

Every import counts, lazy ones inside functions too (grimp reads them all). A module's layer is
that of the longest prefix listed in LAYERS (top first); the root package `harness` (a version
string, nothing else) is left out. Cycles are strongly connected components of two or more
nodes, counted between modules and between top-level parts (harness.counting.* as one node).
The permanent check is the import-linter contracts in pyproject.toml (tests/test_layers.py);
this script gives the numbers for the whole package, including parts those contracts do not
cover yet.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

import grimp

# Top to bottom. Modules in one layer may import each other; a module may import any layer below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("harness.cli", "harness.commands", "harness.plugin"),  # entry points
    ("harness.items", "harness.model_handle"),  # collection and fixtures
    ("harness.suites",),  # what each suite measures
    ("harness.report",),  # rendering
    ("harness.verdict", "harness.boundary"),  # the one verdict; what a base requires
    ("harness.registry",),  # the suites declared once
    ("harness.pairs", "harness.baseline", "harness.timing"),  # workers, the base, timing
    # pure: how much, gate changes; the board answers kept across sessions
    ("harness.emulation_plan", "harness.policy", "harness.progress", "harness.answers_cache"),
    ("harness.store",),  # the plugin's and the reports' door to the history
    ("harness.history",),  # the history's stores, its record format, trend judgement
    ("harness.gates", "harness.github", "harness.operators", "harness.external_data"),
    ("harness.backends",),  # realising a device; the counted run (backends.qemu)
    ("harness.counting",),  # the plugin build; counts and the estimate model
    ("harness.images",),
    ("harness.config",),
    ("harness.stats", "harness.modelgen", "harness.language_scores"),
    ("harness.language_config",),
    ("harness.devices",),
    # ground floor
    ("harness.results", "harness.identity", "harness.errors", "harness.catalogue", "harness.links"),
    ("harness.worker",),  # in the target: standard library, numpy and the runtime only
    ("harness.runtimes",),
)


def layer_of(module: str) -> int:
    best, found = -1, len(LAYERS)
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), index
    if best < 0:
        raise SystemExit(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return found


def part_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
        graph.setdefault(target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def measure() -> dict[str, list[str]]:
    graph = grimp.build_graph("harness", cache_dir=None)
    edges = [
        (source, target)
        for source in graph.modules
        for target in graph.find_modules_directly_imported_by(source)
        if "harness" not in (source, target)
    ]
    upward = sorted(f"{s} -> {t}" for s, t in edges if layer_of(t) < layer_of(s))
    module_cycles = [" <-> ".join(c) for c in cycles(edges)]
    part_edges = {(part_of(s), part_of(t)) for s, t in edges if part_of(s) != part_of(t)}
    part_cycles = [" <-> ".join(c) for c in cycles(part_edges)]
    return {"module cycles": module_cycles, "part cycles": part_cycles, "upward imports": upward}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", action="store_true", help="counts only")
    args = parser.parse_args(argv)
    found = measure()
    for name, items in found.items():
        print(f"{name}: {len(items)}")
        if not args.quiet:
            for item in items:
                print(f"  {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
