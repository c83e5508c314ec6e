"""ONNX Runtime GenAI: a decoder-only language model folder (genai_config.json, model.onnx, the
tokenizer files) loaded with its tokenizer; greedy generation with GenAI's KV cache.

Full-sequence logits for perplexity come from GenAI too: after `append_tokens` of a window, the
model's `logits` output holds every position of that window (GenAI keeps the whole tensor; its
own search reads only the last row).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.runtimes.base import ModelLoadError
from harness.runtimes.language import Generated, Regions, Stop, TextOptions

CONFIG_FILE = "genai_config.json"


def _nothing() -> None:
    pass


def is_model_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()


class GenaiRuntime:
    name = "onnxruntime-genai"
    provider = "CPUExecutionProvider"

    def __init__(
        self,
        folder: str,
        threads: int,
        accelerator: str = "none",
        options: TextOptions | None = None,
    ) -> None:
        try:
            import onnxruntime_genai as og
        except ImportError as exc:
            raise ModelLoadError(
                f"onnxruntime-genai is not installed here ({exc}); pip install onnxruntime-genai "
                "(the device images carry it)"
            ) from None
        self._og = og
        self.version = str(og.__version__)
        if not is_model_folder(folder):
            raise ModelLoadError(
                f"{folder} is not an ONNX Runtime GenAI model folder: it has no {CONFIG_FILE} "
                "(make one with python -m onnxruntime_genai.models.builder)"
            )
        document = json.loads((Path(folder) / CONFIG_FILE).read_text())
        model_table = document.get("model", {})
        self.context_length = int(
            model_table.get("context_length") or document.get("search", {}).get("max_length", 0)
        )
        self.vocab_size = int(model_table.get("vocab_size", 0))
        try:
            config = og.Config(folder)
            config.clear_providers()
            if accelerator == "cuda":
                config.append_provider("cuda")
                self.provider = "CUDAExecutionProvider"
            session = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
            config.overlay(json.dumps({"model": {"decoder": {"session_options": session}}}))
            self.model = og.Model(config)
            self.tokenizer = og.Tokenizer(self.model)
        except Exception as exc:  # GenAI raises plain RuntimeError with its own text
            raise ModelLoadError(f"onnxruntime-genai cannot load {folder}: {exc}") from None
        self.eos = {int(t) for t in np.asarray(self.tokenizer.eos_token_ids).reshape(-1)}
        self.bos = int(self.tokenizer.bos_token_id)
        # Settings that move answers: int4 MatMulNBits' accuracy_level is fixed in the graph at
        # export (the builder's default for CPU is 4: activations quantized to int8).
        self.settings: dict[str, Any] = {"runtime": "onnxruntime-genai", "search": "greedy"}
        if options is not None and options.kv_cache != TextOptions().kv_cache:
            raise ModelLoadError(
                f"kv_cache = {options.kv_cache!r} is a llama.cpp setting; ONNX Runtime GenAI "
                "folders keep the KV cache in the graph's own type (remove it from "
                "[models.generate])"
            )

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer.encode(text)]

    def decode(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode(np.asarray(tokens, dtype=np.int32)))

    def _generator(self, max_length: int) -> Any:
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(max_length=max_length, do_sample=False)  # greedy
        return self._og.Generator(self.model, params)

    def generate(
        self,
        prompt: Sequence[int],
        new_tokens: int,
        stop_at_eos: bool = True,
        regions: Regions | None = None,
        stop: Stop | None = None,
    ) -> Generated:
        """Greedy decoding of up to `new_tokens` tokens after `prompt` (at least one token, and
        prompt + new tokens within the context: the caller checks). With `regions` (begin, end),
        the prefill (to the first token) and the decode steps after it are two counted regions."""
        clock = time.perf_counter_ns
        begin, end = regions or (_nothing, _nothing)
        generator = self._generator(len(prompt) + new_tokens)
        tokens: list[int] = []
        steps: list[int] = []
        begin()
        started = clock()
        generator.append_tokens(np.asarray(prompt, dtype=np.int32))
        generator.generate_next_token()
        first_ns = clock() - started
        token = int(generator.get_next_tokens()[0])
        end()
        tokens.append(token)
        finish = "length"
        if regions is not None and new_tokens > 1:
            begin()
        while len(tokens) < new_tokens:
            if stop_at_eos and token in self.eos:
                finish = "eos"
                break
            if stop is not None and stop(tokens):
                finish = "stop"
                break
            started = clock()
            generator.generate_next_token()
            steps.append(clock() - started)
            token = int(generator.get_next_tokens()[0])
            tokens.append(token)
        if regions is not None and new_tokens > 1:
            end()
        if token in self.eos and stop_at_eos:
            finish = "eos"
        return Generated(tokens, first_ns, steps, finish)

    def window_logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits [len(tokens), vocab] for every position of one window, in one forward pass."""
        generator = self._generator(len(tokens) + 1)
        generator.append_tokens(np.asarray(tokens, dtype=np.int32))
        logits = np.asarray(generator.get_output("logits"), dtype=np.float32)
        rows = logits.reshape(-1, logits.shape[-1])
        if rows.shape[0] != len(tokens):
            raise ModelLoadError(
                f"the model's logits output holds {rows.shape[0]} positions for a window of "
                f"{len(tokens)} tokens; perplexity needs every position (export the model with "
                "full logits, the GenAI model builder's default)"
            )
        return rows
