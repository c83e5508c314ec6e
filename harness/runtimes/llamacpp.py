"""GGUF language models through llama.cpp's C library (libllama), with ctypes.

The library comes from the llama.cpp runtime set (harness.images.llamacpp): Debian sid's packages,
built against a newer glibc than the device images' Debian bookworm. The worker therefore runs
under the set's own dynamic loader: `python -m harness.worker` with HARNESS_LLAMA_CPP naming the
set re-executes itself as `<set loader> --library-path <set libs> <python> ...` before anything is
imported (harness.runtimes.llamacpp_set, from harness.worker.__main__), and libllama then
loads here like any library. Nothing is compiled.

What it measures is what llama.cpp runs: the model's own tokenizer (GGUF metadata), greedy
decoding (the argmax of the logits, as GenAI's greedy search), every position's logits of a
window in one `llama_decode` (each batch token marked as an output), and a KV cache of
`TextOptions.context` tokens allocated at load, in `TextOptions.kv_cache`'s type. The context
is cleared before every window and every generation.

The structures below are those of llama.h in the pinned llama.cpp (LLAMA_CPP_VERSION in
harness.images.llamacpp); `_check_defaults` refuses a library whose default parameters do not
read as that version's do (a layout that moved), rather than passing it garbage.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.runtimes.base import ModelLoadError
from harness.runtimes.language import Generated, Regions, Stop, TextOptions
from harness.runtimes.llamacpp_set import ENV, UNDER_LOADER, SetError, manifest

KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "q4_0": 2}  # ggml_type
LOG_WARN = 3  # ggml_log_level: DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5


class ModelParams(ctypes.Structure):
    _fields_ = [
        ("devices", ctypes.c_void_p),
        ("tensor_buft_overrides", ctypes.c_void_p),
        ("n_gpu_layers", ctypes.c_int32),
        ("split_mode", ctypes.c_int),
        ("load_mode", ctypes.c_int),
        ("lazy_mode", ctypes.c_int),
        ("main_gpu", ctypes.c_int32),
        ("tensor_split", ctypes.c_void_p),
        ("progress_callback", ctypes.c_void_p),
        ("progress_callback_user_data", ctypes.c_void_p),
        ("kv_overrides", ctypes.c_void_p),
        ("vocab_only", ctypes.c_bool),
        ("check_tensors", ctypes.c_bool),
        ("use_extra_bufts", ctypes.c_bool),
        ("no_host", ctypes.c_bool),
        ("no_alloc", ctypes.c_bool),
        ("load_mtp", ctypes.c_bool),
    ]


class ContextParams(ctypes.Structure):
    _fields_ = [
        ("n_ctx", ctypes.c_uint32),
        ("n_batch", ctypes.c_uint32),
        ("n_ubatch", ctypes.c_uint32),
        ("n_seq_max", ctypes.c_uint32),
        ("n_rs_seq", ctypes.c_uint32),
        ("n_outputs_max", ctypes.c_uint32),
        ("n_outputs_max_per_seq", ctypes.c_uint32),
        ("n_threads", ctypes.c_int32),
        ("n_threads_batch", ctypes.c_int32),
        ("ctx_type", ctypes.c_int),
        ("rope_scaling_type", ctypes.c_int),
        ("pooling_type", ctypes.c_int),
        ("attention_type", ctypes.c_int),
        ("flash_attn_type", ctypes.c_int),
        ("rope_freq_base", ctypes.c_float),
        ("rope_freq_scale", ctypes.c_float),
        ("yarn_ext_factor", ctypes.c_float),
        ("yarn_attn_factor", ctypes.c_float),
        ("yarn_beta_fast", ctypes.c_float),
        ("yarn_beta_slow", ctypes.c_float),
        ("yarn_orig_ctx", ctypes.c_uint32),
        ("defrag_thold", ctypes.c_float),
        ("cb_eval", ctypes.c_void_p),
        ("cb_eval_user_data", ctypes.c_void_p),
        ("type_k", ctypes.c_int),
        ("type_v", ctypes.c_int),
        ("moe_cache_size", ctypes.c_size_t),
        ("abort_callback", ctypes.c_void_p),
        ("abort_callback_data", ctypes.c_void_p),
        ("embeddings", ctypes.c_bool),
        ("offload_kqv", ctypes.c_bool),
        ("no_perf", ctypes.c_bool),
        ("op_offload", ctypes.c_bool),
        ("swa_full", ctypes.c_bool),
        ("kv_unified", ctypes.c_bool),
        ("samplers", ctypes.c_void_p),
        ("n_samplers", ctypes.c_size_t),
        ("ctx_other", ctypes.c_void_p),
    ]


class Batch(ctypes.Structure):
    _fields_ = [
        ("n_tokens", ctypes.c_int32),
        ("token", ctypes.POINTER(ctypes.c_int32)),
        ("embd", ctypes.POINTER(ctypes.c_float)),
        ("pos", ctypes.POINTER(ctypes.c_int32)),
        ("n_seq_id", ctypes.POINTER(ctypes.c_int32)),
        ("seq_id", ctypes.POINTER(ctypes.POINTER(ctypes.c_int32))),
        ("logits", ctypes.POINTER(ctypes.c_int8)),
    ]


LogCallback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def _quiet(level: int, text: bytes | None, data: object) -> None:
    """llama.cpp's log: warnings and errors to stderr (the worker keeps its tail), not the
    per-load chatter."""
    if level in (LOG_WARN, LOG_WARN + 1) and text:
        sys.stderr.write(text.decode(errors="replace"))


_LOG = LogCallback(_quiet)  # kept alive for the process's life


class _Library:
    """libllama and libggml, loaded once per worker, with the signatures used here."""

    def __init__(self, folder: str) -> None:
        try:
            document = manifest(folder)
        except SetError as exc:
            raise ModelLoadError(str(exc)) from None
        self.version = str(document.get("llama_cpp", "?")).split(":", 1)[-1]
        try:
            self.ggml = ctypes.CDLL("libggml.so.0")
            self.llama = ctypes.CDLL("libllama.so.0")
        except OSError as exc:
            raise ModelLoadError(
                f"cannot load libllama from the llama.cpp runtime set at {folder} ({exc}); is "
                f"the worker running under the set's loader ({UNDER_LOADER} unset)?"
            ) from None
        c = ctypes
        tokens, flags = c.POINTER(c.c_int32), [c.c_int32, c.c_bool, c.c_bool]
        signatures: dict[str, tuple[Any, list[Any]]] = {
            "llama_backend_init": (None, []),
            "llama_log_set": (None, [c.c_void_p, c.c_void_p]),
            "llama_model_default_params": (ModelParams, []),
            "llama_context_default_params": (ContextParams, []),
            "llama_model_load_from_file": (c.c_void_p, [c.c_char_p, ModelParams]),
            "llama_init_from_model": (c.c_void_p, [c.c_void_p, ContextParams]),
            "llama_model_get_vocab": (c.c_void_p, [c.c_void_p]),
            "llama_model_n_ctx_train": (c.c_int32, [c.c_void_p]),
            "llama_model_n_params": (c.c_uint64, [c.c_void_p]),
            "llama_model_size": (c.c_uint64, [c.c_void_p]),
            "llama_model_desc": (c.c_int32, [c.c_void_p, c.c_char_p, c.c_size_t]),
            "llama_n_ctx": (c.c_uint32, [c.c_void_p]),
            "llama_vocab_n_tokens": (c.c_int32, [c.c_void_p]),
            "llama_vocab_bos": (c.c_int32, [c.c_void_p]),
            "llama_vocab_eos": (c.c_int32, [c.c_void_p]),
            "llama_vocab_is_eog": (c.c_bool, [c.c_void_p, c.c_int32]),
            # vocab, text, length, tokens, room, add_special, parse_special
            "llama_tokenize": (c.c_int32, [c.c_void_p, c.c_char_p, c.c_int32, tokens, *flags]),
            # vocab, tokens, count, text, room, remove_special, unparse_special
            "llama_detokenize": (c.c_int32, [c.c_void_p, tokens, c.c_int32, c.c_char_p, *flags]),
            "llama_batch_init": (Batch, [c.c_int32, c.c_int32, c.c_int32]),
            "llama_batch_free": (None, [Batch]),
            "llama_decode": (c.c_int32, [c.c_void_p, Batch]),
            "llama_get_logits": (c.POINTER(c.c_float), [c.c_void_p]),
            "llama_get_logits_ith": (c.POINTER(c.c_float), [c.c_void_p, c.c_int32]),
            "llama_get_memory": (c.c_void_p, [c.c_void_p]),
            "llama_memory_clear": (None, [c.c_void_p, c.c_bool]),
            "llama_free": (None, [c.c_void_p]),
            "llama_model_free": (None, [c.c_void_p]),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(self.llama, name)
            function.restype, function.argtypes = restype, argtypes
        self.ggml.ggml_backend_load_all_from_path.argtypes = [c.c_char_p]
        self.ggml.ggml_backend_load_all_from_path.restype = None
        self.llama.llama_log_set(ctypes.cast(_LOG, ctypes.c_void_p), None)
        self.ggml.ggml_backend_load_all_from_path(str(Path(folder) / document["backends"]).encode())
        self.llama.llama_backend_init()
        self._check_defaults()

    def _check_defaults(self) -> None:
        """llama.cpp 0.7.0's defaults, read through our structures: a library whose layout
        differs reads as something else."""
        context = self.llama.llama_context_default_params()
        model = self.llama.llama_model_default_params()
        seen = (context.n_batch, context.n_ubatch, context.n_seq_max, context.type_k,
                context.type_v, model.split_mode, model.check_tensors)  # fmt: skip
        if seen != (2048, 512, 1, 1, 1, 1, False):
            raise ModelLoadError(
                f"libllama {self.version}'s default parameters do not match the structures of "
                f"harness.runtimes.llamacpp (read {seen}); the binding follows llama.cpp "
                "0.7.0's llama.h: use that runtime set (harness images llama-cpp)"
            )


_LIBRARY: _Library | None = None


def library() -> _Library:
    global _LIBRARY
    if _LIBRARY is None:
        folder = os.environ.get(ENV)
        if not folder:
            raise ModelLoadError(
                "a GGUF model needs the llama.cpp runtime set, and this worker was started "
                f"without it ({ENV} is unset); the harness backends set it for .gguf models "
                "(fetch the set with: harness images llama-cpp)"
            )
        _LIBRARY = _Library(folder)
    return _LIBRARY


def _nothing() -> None:
    pass


class LlamaCppRuntime:
    name = "llama.cpp"

    def __init__(
        self,
        path: str,
        threads: int,
        accelerator: str = "none",
        options: TextOptions | None = None,
    ) -> None:
        options = options or TextOptions()
        if accelerator != "none":
            raise ModelLoadError(
                f"{path}: the llama.cpp runtime set runs on the CPU only (accelerator = "
                f"{accelerator!r}); use a CPU device for GGUF models"
            )
        if options.kv_cache not in KV_TYPES:
            raise ModelLoadError(
                f"kv_cache = {options.kv_cache!r} is not one of {', '.join(KV_TYPES)}"
            )
        lib = library()
        self._lib = lib.llama
        self.version = lib.version
        params = self._lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self.model = self._lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise ModelLoadError(
                f"llama.cpp {self.version} cannot load {path} (its log above names the reason: "
                "an unknown architecture or tensor type, a truncated file)"
            )
        self.vocab = self._lib.llama_model_get_vocab(self.model)
        trained = int(self._lib.llama_model_n_ctx_train(self.model))
        wanted = options.context or trained
        if wanted > trained:
            raise ModelLoadError(
                f"a context of {wanted} tokens exceeds {path}'s trained context of {trained}"
            )
        context = self._lib.llama_context_default_params()
        context.n_ctx = wanted
        context.n_batch = context.n_ubatch = max(wanted, 32)  # a window in one pass
        context.n_threads = context.n_threads_batch = threads
        context.type_k = context.type_v = KV_TYPES[options.kv_cache]
        context.no_perf = True
        self.ctx = self._lib.llama_init_from_model(self.model, context)
        if not self.ctx:
            raise ModelLoadError(
                f"llama.cpp cannot make a context of {wanted} tokens for {path} with a "
                f"{options.kv_cache} KV cache (its log above says why)"
            )
        self.memory = self._lib.llama_get_memory(self.ctx)
        self.context_length = int(self._lib.llama_n_ctx(self.ctx))
        self.vocab_size = int(self._lib.llama_vocab_n_tokens(self.vocab))
        self.bos = int(self._lib.llama_vocab_bos(self.vocab))
        eos = int(self._lib.llama_vocab_eos(self.vocab))
        self.eos = {eos} if eos >= 0 else set()
        self.provider = "llama.cpp CPU backend"
        description = ctypes.create_string_buffer(256)
        self._lib.llama_model_desc(self.model, description, 256)
        self.settings: dict[str, Any] = {
            "runtime": "llama.cpp",
            "kv_cache": options.kv_cache,
            "context": self.context_length,
            "model": description.value.decode(errors="replace"),
            "parameters": int(self._lib.llama_model_n_params(self.model)),
            "search": "greedy",
        }
        self._batch = self._lib.llama_batch_init(self.context_length, 0, 1)

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        if getattr(self, "_batch", None) is not None:
            lib.llama_batch_free(self._batch)
        if getattr(self, "ctx", None):
            lib.llama_free(self.ctx)
        if getattr(self, "model", None):
            lib.llama_model_free(self.model)

    def encode(self, text: str) -> list[int]:
        data = text.encode()
        room = len(data) + 16
        buffer = (ctypes.c_int32 * room)()
        count = self._lib.llama_tokenize(self.vocab, data, len(data), buffer, room, True, False)
        if count < 0:  # more tokens than room: -count is how many
            room = -count
            buffer = (ctypes.c_int32 * room)()
            count = self._lib.llama_tokenize(self.vocab, data, len(data), buffer, room, True, False)
        return [int(t) for t in buffer[: max(count, 0)]]

    def decode(self, tokens: Sequence[int]) -> str:
        array = (ctypes.c_int32 * max(len(tokens), 1))(*tokens)
        room = 16 * len(tokens) + 16
        text = ctypes.create_string_buffer(room)
        count = self._lib.llama_detokenize(self.vocab, array, len(tokens), text, room, False, False)
        if count < 0:
            room = -count
            text = ctypes.create_string_buffer(room)
            count = self._lib.llama_detokenize(
                self.vocab, array, len(tokens), text, room, False, False
            )
        return text.raw[: max(count, 0)].decode(errors="replace")

    def _decode(self, tokens: Sequence[int], start: int, outputs: str) -> None:
        """Run `tokens` at positions start.. through the model; `outputs`: "all" or "last"."""
        if start + len(tokens) > self.context_length:
            raise ModelLoadError(
                f"{start + len(tokens)} tokens exceed the context of {self.context_length}"
            )
        batch = self._batch
        batch.n_tokens = len(tokens)
        for index, token in enumerate(tokens):
            batch.token[index] = int(token)
            batch.pos[index] = start + index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = 0
            batch.logits[index] = 1 if outputs == "all" or index == len(tokens) - 1 else 0
        status = self._lib.llama_decode(self.ctx, batch)
        if status != 0:
            raise ModelLoadError(f"llama_decode failed with status {status}")

    def _last_token(self) -> int:
        row = self._lib.llama_get_logits_ith(self.ctx, -1)
        logits = np.ctypeslib.as_array(row, shape=(self.vocab_size,))
        return int(np.argmax(logits))

    def generate(
        self,
        prompt: Sequence[int],
        new_tokens: int,
        stop_at_eos: bool = True,
        regions: Regions | None = None,
        stop: Stop | None = None,
    ) -> Generated:
        clock = time.perf_counter_ns
        begin, end = regions or (_nothing, _nothing)
        self._lib.llama_memory_clear(self.memory, True)
        tokens: list[int] = []
        steps: list[int] = []
        begin()
        started = clock()
        self._decode(prompt, 0, "last")
        token = self._last_token()
        first_ns = clock() - started
        end()
        tokens.append(token)
        finish = "length"
        if regions is not None and new_tokens > 1:
            begin()
        position = len(prompt)
        while len(tokens) < new_tokens:
            if stop_at_eos and token in self.eos:
                finish = "eos"
                break
            if stop is not None and stop(tokens):
                finish = "stop"
                break
            started = clock()
            self._decode([token], position, "last")
            token = self._last_token()
            steps.append(clock() - started)
            position += 1
            tokens.append(token)
        if regions is not None and new_tokens > 1:
            end()
        if token in self.eos and stop_at_eos:
            finish = "eos"
        return Generated(tokens, first_ns, steps, finish)

    def window_logits(self, tokens: Sequence[int]) -> np.ndarray:
        self._lib.llama_memory_clear(self.memory, True)
        self._decode(tokens, 0, "all")
        rows = self._lib.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(rows, shape=(len(tokens), self.vocab_size)).copy()
