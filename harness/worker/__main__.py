"""Worker entry point: `python -m harness.worker`, speaking harness.worker.protocol on stdio.

A worker for a GGUF model (HARNESS_LLAMA_CPP set by the backend) first re-executes itself under
the llama.cpp runtime set's loader (harness.runtimes.llamacpp_set), before importing anything else.
"""

from harness.runtimes.llamacpp_set import reexec_under_loader

if __name__ == "__main__":
    reexec_under_loader()
    from harness.worker.server import main

    main()
