"""The `harness` command's groups, one module each (harness.cli puts them together): devices,
images and counting. Each module has `add_parser(commands)`, which adds its subcommand with a
`handler(args) -> exit status` default. Heavy imports wait inside the handlers, so `harness
--help` stays fast.
"""
