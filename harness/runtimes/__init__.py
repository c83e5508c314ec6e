"""Model runtimes, one file per format. Imported inside the worker: stdlib + numpy + one runtime."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.runtimes.base import Runtime
    from harness.runtimes.language import TextOptions, TextRuntime

FORMATS = {".onnx": "onnx", ".tflite": "tflite"}


TEXT_FORMATS = ("genai", "gguf")  # language models (harness.runtimes.language)


def format_of(path: str | Path) -> str:
    from harness.runtimes.genai import is_model_folder

    if is_model_folder(path):
        return "genai"  # a language model folder: genai_config.json, model.onnx, tokenizer
    suffix = Path(path).suffix.lower()
    if suffix == ".gguf":
        return "gguf"  # a language model file for llama.cpp
    if suffix not in FORMATS:
        raise ValueError(
            f"{path}: unknown model format {suffix!r}; harness runs .onnx and .tflite files, "
            "ONNX Runtime GenAI model folders (with genai_config.json) and .gguf files"
        )
    return FORMATS[suffix]


def open_runtime(path: str, threads: int, accelerator: str = "none") -> Runtime:
    """Load the model at `path` with the runtime for its format (imported lazily)."""
    fmt = format_of(path)
    if fmt == "onnx":
        from harness.runtimes.onnx import OnnxRuntime

        return OnnxRuntime(path, threads, accelerator)
    from harness.runtimes.tflite import TfliteRuntime

    return TfliteRuntime(path, threads, accelerator)


def open_text_runtime(
    path: str, threads: int, accelerator: str = "none", options: TextOptions | None = None
) -> TextRuntime:
    """The runtime for a language model (harness.runtimes.language): a .gguf file through
    llama.cpp, a folder through ONNX Runtime GenAI (imported lazily: a worker imports only the
    one it needs)."""
    if format_of(path) == "gguf":
        from harness.runtimes.llamacpp import LlamaCppRuntime

        return LlamaCppRuntime(path, threads, accelerator, options)
    from harness.runtimes.genai import GenaiRuntime

    return GenaiRuntime(path, threads, accelerator, options)
