"""The worker's operations on language models (ONNX Runtime GenAI folders and GGUF files through
llama.cpp, behind harness.runtimes.language.TextRuntime).

Measurement only, no judging: tokens, per-token negative log-likelihoods, greedy continuations and
timings in nanoseconds measured here, inside the device. Text travels in the requests (the host
reads the repository's text and prompt files), so nothing but the model folder is mounted.

A prompt the model cannot take (longer than its context) is answered with an error entry for that
prompt, never an exception: one bad prompt does not end a prompt set, nor the worker.

Long work comes in parts the host asks for one request at a time (perplexity and comparison by
window, `windows=[...]`), so the host can say how far it got and sample windows on an expensive
device; log-probabilities are computed in float32, a window at a time, so scoring a text never
costs more memory than one window's logits twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from harness.runtimes import open_text_runtime
from harness.runtimes.language import TextOptions, TextRuntime


class TextRequestError(ValueError):
    """A request on a language model that cannot be served as asked (the message says why)."""


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in the logits' own precision (float32: exp of a shifted row cannot
    overflow, and a float64 copy of a window's logits over a 49k vocabulary is what made the old
    peak memory figure)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return result


def kl_divergence_rows(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """KL(reference || other) per row, in nats, from two rows of log-probabilities each: what
    llama-perplexity --kl-divergence reports per token (the base model's distribution first)."""
    p = np.exp(reference)
    kld: np.ndarray = np.maximum((p * (reference - other)).sum(axis=1), 0.0)
    return kld  # (rounding can give -1e-9 for identical rows: clipped at 0)


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
        self.models: dict[str, TextRuntime] = {}
        self.status_kb = status_kb

    def _model(self, model_id: str) -> TextRuntime:
        if model_id not in self.models:
            raise TextRequestError(f"no language model {model_id!r} loaded in this worker")
        return self.models[model_id]

    def load(
        self,
        model_id: str,
        path: str,
        threads: int,
        accelerator: str,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        runtime = open_text_runtime(path, threads, accelerator, TextOptions(**(options or {})))
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
            "settings": dict(runtime.settings),
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
    def _prompt_tokens(runtime: TextRuntime, prompt: str) -> list[int]:
        """The prompt's tokens; an empty prompt starts from the beginning-of-text token."""
        tokens = runtime.encode(prompt)
        if not tokens:
            tokens = [runtime.bos if runtime.bos >= 0 else min(runtime.eos)]
        return tokens

    def generate(
        self,
        model_id: str,
        prompts: Sequence[str],
        new_tokens: int,
        stop_at_eos: bool = True,
        first_line: bool = False,
    ) -> dict[str, Any]:
        """Greedy continuations of each prompt; per prompt either tokens + text or an error.
        With `first_line`, a continuation ends once its first non-empty line is complete (an
        answer is that line: the tokens after it would be thrown away)."""
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
            stop = None
            if first_line:

                def stop(generated: list[int], runtime: TextRuntime = runtime) -> bool:
                    return "\n" in runtime.decode(generated).lstrip()

            out = runtime.generate(tokens, min(new_tokens, room), stop_at_eos, stop=stop)
            results.append(
                {
                    "prompt_tokens": len(tokens),
                    "tokens": out.tokens,
                    "text": runtime.decode(out.tokens),
                    "finish": out.finish
                    if room >= new_tokens or out.finish == "stop"
                    else "context",
                }
            )
        return {"results": results, "context_length": runtime.context_length}

    def _spans(
        self, runtime: TextRuntime, text: str, window: int, stride: int
    ) -> tuple[list[int], list[tuple[int, int, int]]]:
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
        return tokens, windows(len(tokens), window, stride)

    @staticmethod
    def _chosen(spans: list[tuple[int, int, int]], chosen: list[int] | None) -> list[int]:
        if chosen is None:
            return list(range(len(spans)))
        bad = [i for i in chosen if not 0 <= i < len(spans)]
        if bad:
            raise TextRequestError(f"windows {bad} outside the text's {len(spans)} windows")
        return [int(i) for i in chosen]

    @staticmethod
    def _window_rows(
        runtime: TextRuntime, tokens: list[int], span: tuple[int, int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(log-probabilities of the scored positions, their target tokens) of one window."""
        begin, end, first = span
        logits = runtime.window_logits(tokens[begin:end])
        # Row i predicts token begin + i + 1; score targets first..end-1.
        scored = np.asarray(logits[first - 1 - begin : end - 1 - begin], dtype=np.float32)
        return log_softmax_rows(scored), np.asarray(tokens[first:end])

    def perplexity(
        self,
        model_id: str,
        text: str,
        window: int,
        stride: int,
        windows: list[int] | None = None,
    ) -> dict[str, Any]:
        """Per-token negative log-likelihood (nats) of `text` under sliding windows, and the
        model's top-1 (greedy) next token at each scored position; only the windows at the
        indices `windows` when given (`counts` says how many positions each gave)."""
        runtime = self._model(model_id)
        tokens, spans = self._spans(runtime, text, window, stride)
        nll: list[np.ndarray] = []
        greedy: list[np.ndarray] = []
        chosen = self._chosen(spans, windows)
        for index in chosen:
            rows, targets = self._window_rows(runtime, tokens, spans[index])
            nll.append(-rows[np.arange(len(targets)), targets].astype(np.float64))
            greedy.append(np.argmax(rows, axis=1).astype(np.int32))
        return {
            "tokens": len(tokens),
            "windows": len(spans),
            "chosen": chosen,
            "counts": [len(n) for n in nll],
            "nll": np.concatenate(nll) if nll else np.zeros(0),
            "greedy": np.concatenate(greedy) if greedy else np.zeros(0, dtype=np.int32),
        }

    def compare(
        self,
        model_id: str,
        reference_id: str,
        text: str,
        window: int,
        stride: int,
        windows: list[int] | None = None,
    ) -> dict[str, Any]:
        """Both models on the same windows of `text` (the reference: the float base): per scored
        position, KL(reference || model) of the next-token distributions, both negative
        log-likelihoods and both greedy tokens. Full distributions never leave the worker."""
        mine, theirs = self._model(model_id), self._model(reference_id)
        tokens, spans = self._spans(mine, text, window, stride)
        if theirs.encode(text) != tokens:
            raise TextRequestError(
                f"{model_id} and {reference_id} tokenize the text differently; a comparison "
                "needs the same tokenizer (the same vocabulary and merges)"
            )
        if mine.vocab_size != theirs.vocab_size:
            raise TextRequestError(
                f"{model_id} has {mine.vocab_size} tokens, {reference_id} {theirs.vocab_size}: "
                "their distributions cannot be compared"
            )
        names = ("kld", "nll", "reference_nll", "greedy", "reference_greedy")
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        chosen = self._chosen(spans, windows)
        for index in chosen:
            rows, targets = self._window_rows(mine, tokens, spans[index])
            reference, _ = self._window_rows(theirs, tokens, spans[index])
            at = np.arange(len(targets))
            parts["kld"].append(kl_divergence_rows(reference, rows).astype(np.float64))
            parts["nll"].append(-rows[at, targets].astype(np.float64))
            parts["reference_nll"].append(-reference[at, targets].astype(np.float64))
            parts["greedy"].append(np.argmax(rows, axis=1).astype(np.int32))
            parts["reference_greedy"].append(np.argmax(reference, axis=1).astype(np.int32))
        result: dict[str, Any] = {
            "tokens": len(tokens),
            "windows": len(spans),
            "chosen": chosen,
            "counts": [len(k) for k in parts["kld"]],
        }
        for key, values in parts.items():
            result[key] = np.concatenate(values) if values else np.zeros(0)
        return result

    def _bench_prompt(self, runtime: TextRuntime, text: str, count: int) -> list[int]:
        source = runtime.encode(text) or self._prompt_tokens(runtime, "")
        repeats = -(-count // len(source))
        return (source * repeats)[:count]

    def _decode_prompt(
        self, runtime: TextRuntime, text: str, prompt_tokens: int, new_tokens: int
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


OPERATIONS = (
    "generate",
    "perplexity",
    "compare",
    "decode_bench",
    "count_decode",
    "fill_context",
)
