"""What every language-model runtime offers the worker (harness.worker.generate): a tokenizer,
greedy generation with timings, and the logits of every position of a window.

Two runtimes implement it, one file each: ONNX Runtime GenAI folders (harness.runtimes.genai)
and GGUF files through llama.cpp (harness.runtimes.llamacpp). The worker's operations, the suites
above them and the gates are the same for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# Called at the start and at the end of a counted region (harness.worker.markers.begin / end).
Regions = tuple[Callable[[], None], Callable[[], None]]
# Asked after each generated token (the tokens so far): True ends the run early ("stop").
Stop = Callable[[list[int]], bool]


@dataclass
class Generated:
    tokens: list[int]  # the generated tokens only (not the prompt)
    first_token_ns: int  # prompt processing (prefill) + choosing the first token
    step_ns: list[int]  # each further token: one decode step with the KV cache
    finish: str  # "eos" | "length" | "stop"


@dataclass(frozen=True)
class TextOptions:
    """Runtime settings that can move a language model's answers, from [models.generate]: they
    travel with the load request and are part of every answer's identity."""

    context: int = 0  # the context the runtime allocates (llama.cpp's n_ctx; 0: the model's)
    kv_cache: str = "f16"  # llama.cpp's KV-cache type (f16, q8_0, f32); GenAI: not settable

    def as_json(self) -> dict[str, Any]:
        return {"context": self.context, "kv_cache": self.kv_cache}


class TextRuntime(Protocol):
    name: str  # "onnxruntime-genai" | "llama.cpp"
    version: str
    provider: str  # what executes it (CPUExecutionProvider, llama.cpp's CPU backend variant)
    context_length: int  # tokens the runtime holds (prompt + generated)
    vocab_size: int
    eos: set[int]
    bos: int  # the beginning-of-text token, or -1
    settings: dict[str, Any]  # answer-moving settings in force (kv cache type, ...)

    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: Sequence[int]) -> str: ...

    def generate(
        self,
        prompt: Sequence[int],
        new_tokens: int,
        stop_at_eos: bool = True,
        regions: Regions | None = None,
        stop: Stop | None = None,
    ) -> Generated:
        """Greedy decoding of up to `new_tokens` tokens after `prompt`; with `regions`, the
        prefill and the decode steps are two counted regions; `stop` may end it early."""

    def window_logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits [len(tokens), vocab] (float32) for every position, in one forward pass."""
