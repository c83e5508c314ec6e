"""The `harness` command's groups, one module each (harness.cli puts them together): devices,
images, counting, calibrate, gate (run, base, needs), reports (merge, report, comment) and
history (history, nightly). Each module has `add_parser(commands)`, which adds its subcommand with a
`handler(args) -> exit status` default. Heavy imports wait inside the handlers, so `harness
--help` stays fast.
"""
