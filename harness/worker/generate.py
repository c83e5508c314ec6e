"""The worker's operations on language models (ONNX Runtime GenAI folders).

Measurement only, no judging: tokens, per-token negative log-likelihoods, greedy continuations and
timings in nanoseconds measured here, inside the device. Text travels in the requests (the host
reads the repository's text and prompt files), so nothing but the model folder is mounted.

A prompt the model cannot take (longer than its context) is answered with an error entry for that
prompt, never an exception: one bad prompt does not end a prompt set, nor the worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from harness.runtimes.genai import GenaiRuntime


class TextRequestError(ValueError):
    """A request on a language model that cannot be served as asked (the message says why)."""


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return result


def windows(count: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window over `count` tokens: windows of
    `window` tokens whose ends move by `stride`; each window scores the tokens after the previous
    window's end, so every token but the first is scored once, with at least window - stride
    tokens of context (the usual sliding-window perplexity)."""
    if window < 2 or not 0 < stride < window:
        raise TextRequestError(
            f"perplexity window = {window}, stride = {stride}: need window >= 2 and "
            "0 < stride < window (each window's first scored token needs context)"
        )
    spans = []
    scored_to = 1  # token 0 has no context: never scored
    end = min(window, count)
    while scored_to < count:
        spans.append((max(0, end - window), end, scored_to))
        scored_to = end
        end = min(end + stride, count)
    return spans


class TextModels:
    """The language models loaded in this worker, by id."""

    def __init__(self, status_kb: Callable[[str], int]) -> None:
        self.models: dict[str, GenaiRuntime] = {}
        self.status_kb = status_kb

    def _model(self, model_id: str) -> GenaiRuntime:
        if model_id not in self.models:
            raise TextRequestError(f"no language model {model_id!r} loaded in this worker")
        return self.models[model_id]

    def load(self, model_id: str, path: str, threads: int, accelerator: str) -> dict[str, Any]:
        started = time.perf_counter()
        runtime = GenaiRuntime(path, threads, accelerator)
        load_s = time.perf_counter() - started
        loaded_peak = self.status_kb("VmHWM")
        started = time.perf_counter()
        runtime.generate(self._prompt_tokens(runtime, ""), 1)  # one run, as for other models
        first_run_s = time.perf_counter() - started
        self.models[model_id] = runtime
        return {
            "task": "generate",
            "runtime": runtime.name,
            "runtime_version": runtime.version,
            "provider": runtime.provider,
            "context_length": runtime.context_length,
            "vocab_size": runtime.vocab_size,
            "eos_token_ids": sorted(runtime.eos),
            "inputs": [],
            "outputs": [],
            "samples": 0,
            "load_s": load_s,
            "first_run_s": first_run_s,
            "load_peak_kb": loaded_peak,
            "peak_kb": self.status_kb("VmHWM"),
            "rss_kb": self.status_kb("VmRSS"),
        }

    @staticmethod
    def _prompt_tokens(runtime: GenaiRuntime, prompt: str) -> list[int]:
        """The prompt's tokens; an empty prompt starts from the beginning-of-text token."""
        tokens = runtime.encode(prompt)
        if not tokens:
            bos = int(runtime.tokenizer.bos_token_id)
            tokens = [bos if bos >= 0 else min(runtime.eos)]
        return tokens

    def generate(
        self, model_id: str, prompts: Sequence[str], new_tokens: int, stop_at_eos: bool = True
    ) -> dict[str, Any]:
        """Greedy continuations of each prompt; per prompt either tokens + text or an error."""
        runtime = self._model(model_id)
        if new_tokens < 1:
            raise TextRequestError(f"new_tokens = {new_tokens}: generate at least one token")
        results: list[dict[str, Any]] = []
        for prompt in prompts:
            tokens = self._prompt_tokens(runtime, prompt)
            room = runtime.context_length - len(tokens)
            if room < 1:
                results.append(
                    {
                        "prompt_tokens": len(tokens),
                        "error": f"prompt of {len(tokens)} tokens leaves no room in the model's "
                        f"context of {runtime.context_length} tokens; shorten it to at most "
                        f"{runtime.context_length - 1} tokens",
                    }
                )
                continue
            out = runtime.generate(tokens, min(new_tokens, room), stop_at_eos)
            results.append(
                {
                    "prompt_tokens": len(tokens),
                    "tokens": out.tokens,
                    "text": runtime.decode(out.tokens),
                    "finish": out.finish if room >= new_tokens else "context",
                }
            )
        return {"results": results, "context_length": runtime.context_length}

    def perplexity(self, model_id: str, text: str, window: int, stride: int) -> dict[str, Any]:
        """Per-token negative log-likelihood (nats) of `text` under sliding windows, and the
        model's top-1 (greedy) next token at each scored position."""
        runtime = self._model(model_id)
        if window > runtime.context_length:
            raise TextRequestError(
                f"perplexity window = {window} tokens exceeds the model's context of "
                f"{runtime.context_length}; set [models.generate] window <= "
                f"{runtime.context_length}"
            )
        tokens = runtime.encode(text)
        if len(tokens) < 2:
            raise TextRequestError(
                f"the text has {len(tokens)} token(s); perplexity needs at least 2"
            )
        nll: list[np.ndarray] = []
        greedy: list[np.ndarray] = []
        spans = windows(len(tokens), window, stride)
        for begin, end, first in spans:
            logits = runtime.window_logits(tokens[begin:end])
            # Row i predicts token begin + i + 1; score targets first..end-1.
            rows = log_softmax_rows(logits[first - 1 - begin : end - 1 - begin].astype(np.float64))
            targets = np.asarray(tokens[first:end])
            nll.append(-rows[np.arange(len(targets)), targets])
            greedy.append(np.argmax(rows, axis=1).astype(np.int32))
        return {
            "tokens": len(tokens),
            "windows": len(spans),
            "nll": np.concatenate(nll).astype(np.float64),
            "greedy": np.concatenate(greedy),
        }

    def _bench_prompt(self, runtime: GenaiRuntime, text: str, count: int) -> list[int]:
        source = runtime.encode(text) or self._prompt_tokens(runtime, "")
        repeats = -(-count // len(source))
        return (source * repeats)[:count]

    def _decode_prompt(
        self, runtime: GenaiRuntime, text: str, prompt_tokens: int, new_tokens: int
    ) -> list[int]:
        if prompt_tokens < 1 or new_tokens < 1:
            raise TextRequestError("prompt_tokens and new_tokens must be at least 1")
        if prompt_tokens + new_tokens > runtime.context_length:
            raise TextRequestError(
                f"prompt_tokens + new_tokens = {prompt_tokens + new_tokens} exceeds the model's "
                f"context of {runtime.context_length} tokens; lower them in [models.generate]"
            )
        return self._bench_prompt(runtime, text, prompt_tokens)

    def decode_bench(
        self, model_id: str, text: str, prompt_tokens: int, new_tokens: int, repeats: int
    ) -> dict[str, Any]:
        """Time to first token for a prompt of `prompt_tokens` tokens (taken from `text`) and the
        time of each further decode step, `repeats` times; EOS does not stop the run."""
        runtime = self._model(model_id)
        prompt = self._decode_prompt(runtime, text, prompt_tokens, new_tokens)
        first: list[int] = []
        steps: list[list[int]] = []
        for _ in range(repeats):
            out = runtime.generate(prompt, new_tokens, stop_at_eos=False)
            first.append(out.first_token_ns)
            steps.append(out.step_ns)
        return {"first_token_ns": first, "step_ns": steps}

    def count_decode(
        self, model_id: str, text: str, prompt_tokens: int, new_tokens: int
    ) -> dict[str, Any]:
        """One warm-up run, then one run whose prefill (to the first token) and whose
        `new_tokens - 1` decode steps are two regions between marker system calls, for a counting
        emulator (harness.timing): the same prompt and steps as decode_bench."""
        from harness.worker import markers

        runtime = self._model(model_id)
        prompt = self._decode_prompt(runtime, text, prompt_tokens, new_tokens)
        runtime.generate(prompt, new_tokens, stop_at_eos=False)
        runtime.generate(prompt, new_tokens, False, (markers.begin, markers.end))
        return {"prompt_tokens": len(prompt), "decode_steps": new_tokens - 1}

    def fill_context(
        self, model_id: str, text: str, context_tokens: int, new_tokens: int
    ) -> dict[str, Any]:
        """Generate until the sequence holds `context_tokens` tokens (the KV cache at that
        length), then read the peak memory."""
        runtime = self._model(model_id)
        if context_tokens > runtime.context_length:
            raise TextRequestError(
                f"context_tokens = {context_tokens} exceeds the model's context of "
                f"{runtime.context_length}; lower [models.generate] context_tokens"
            )
        generated = max(1, min(new_tokens, context_tokens - 1))
        prompt = self._bench_prompt(runtime, text, context_tokens - generated)
        started = time.perf_counter()
        runtime.generate(prompt, generated, stop_at_eos=False)
        return {
            "context_tokens": len(prompt) + generated,
            "fill_s": time.perf_counter() - started,
            "peak_kb": self.status_kb("VmHWM"),
            "rss_kb": self.status_kb("VmRSS"),
        }


OPERATIONS = ("generate", "perplexity", "decode_bench", "count_decode", "fill_context")
