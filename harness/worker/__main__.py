"""Worker entry point: `python -m harness.worker`, speaking harness.worker.protocol on stdio."""

from harness.worker.server import main

if __name__ == "__main__":
    main()
