"""The in-target worker: runs inside the device (host process, container or emulator).

It imports only the standard library, numpy and one runtime, never pytest or the rest of harness.
It measures and reports raw figures; it never judges them.
"""
