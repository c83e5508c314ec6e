"""What the language-model suites share: scoring a text window by window (requests of a few
seconds, progress between them), the host's native reference, and the board's budgeted sample.

The emulation plan for language models (docs/language-models.md): quality is the same everywhere
but for the last digits of the kernels, so on an expensive (emulated) device it is computed
natively on this host, over the whole text or prompt set, and the board answers a seeded sample
of windows or prompts that fits `plan.budget_s`, priced by the first window it scored (which is
one of the sample: at field scale one window costs minutes under QEMU); the board's agreement with
the host on that sample, with its exact interval, decides `device_top1_min`.

What a board answered is kept across sessions (`BoardAnswers`, beside harness.answers_cache's
entries and under the same kind of key: model bytes, image, emulator, CPU, runtime, threads,
harness's worker sources, plus the text or prompts and the lengths): emulated arithmetic is
deterministic, so a later session asks the board only what it has not answered, and reuses the
price of a window, so it draws the same sample.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from harness.answers_cache import cache_folder, key_text
from harness.config import ModelSpec
from harness.emulation_plan import sample_indices
from harness.pairs import Pair, WorkerHandle
from harness.worker.feeds import DataError

REQUEST_S = 10.0  # worker time per request while scoring a text: progress lines between them
MIN_WINDOWS = 2  # fewer sampled windows say nothing about a board's agreement


def text_of(model: ModelSpec) -> str:
    if model.text is None or model.generate is None:
        raise DataError(
            f'model {model.name!r} has no text file; add text = "data/valid.txt" to its '
            "[[models]] entry"
        )
    return model.text.read_text(encoding="utf-8")


Requester = Callable[..., dict[str, Any]]


def scored(
    request: Requester,
    op: str,
    like: ModelSpec,
    chosen: list[int] | None,
    progress: Callable[[str, int, int], None],
    **extra: Any,
) -> dict[str, Any]:
    """`op` ("perplexity" or "compare") over the windows `chosen` (None: all) of `like`'s text,
    window and stride, asked in requests of about REQUEST_S each; arrays concatenated in window
    order, `counts` the scored positions per window."""
    settings = like.generate
    assert settings is not None
    text = text_of(like)
    arguments = {"text": text, "window": settings.window, "stride": settings.stride} | extra
    first = request(op, **arguments, windows=[0] if chosen is None else chosen[:1])
    total = int(first["windows"])
    wanted = list(range(total)) if chosen is None else list(chosen)
    parts = [first]
    done, per_window = 1, 0.0
    while done < len(wanted):
        started = time.monotonic()
        step = max(1, int(REQUEST_S / per_window)) if per_window else 1
        part = request(op, **arguments, windows=wanted[done : done + step])
        per_window = (time.monotonic() - started) / len(part["chosen"])
        parts.append(part)
        done += len(part["chosen"])
        progress("windows", done, len(wanted))
    merged: dict[str, Any] = {k: first[k] for k in ("tokens", "windows")}
    merged["chosen"] = wanted
    merged["counts"] = [c for p in parts for c in p["counts"]]
    for key, value in first.items():
        if isinstance(value, np.ndarray):
            merged[key] = np.concatenate([np.asarray(p[key]) for p in parts])
    return merged


def first_window(request: Requester, like: ModelSpec) -> tuple[float, dict[str, Any]]:
    """(seconds one window of `like`'s text costs where `request` runs, the reply: how many
    windows the text has and the first one's scores), from scoring its first window."""
    settings = like.generate
    assert settings is not None
    started = time.monotonic()
    reply = request("perplexity", text=text_of(like), window=settings.window,
                    stride=settings.stride, windows=[0])  # fmt: skip
    return time.monotonic() - started, reply


def board_sample(pair: Pair, count: int, cost_s: float) -> list[int]:
    """Which of `count` windows (or prompts) the board answers: all that fit the plan's budget
    at `cost_s` each, else the first (it priced the others, so the board has answered it
    already) and a seeded sample of the rest, at least MIN_WINDOWS in all."""
    budget = pair.config.plan.budget_s
    affordable = int(budget / max(cost_s, 1e-9))
    wanted = count if affordable >= count else max(MIN_WINDOWS, affordable)
    if wanted >= count:
        return list(range(count))
    return [0] + [1 + i for i in sample_indices(count - 1, wanted - 1, pair.config.seed)]


def on_host(model: ModelSpec, pair: Pair) -> WorkerHandle:
    """A worker for `model` on this host, natively (the reference; the caller closes it)."""
    from harness.devices import load_profiles

    return WorkerHandle(model, load_profiles()["host"], pair.config)


def in_background(work: Callable[[], dict[str, Any]]) -> Future[dict[str, Any]]:
    """Run `work` in a thread (the host's native reference while the board works)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="harness-host-reference")
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future


class BoardAnswers:
    """A board's answers to a text suite's parts (windows or prompts), kept across sessions as
    JSON: {part index: answer}, and the price of one part ("cost_s"). Emulated devices only."""

    def __init__(
        self,
        pair: Pair,
        op: str,
        base: bool = False,
        worker: WorkerHandle | None = None,
        **identity: Any,
    ) -> None:
        """Keyed by the pair's worker (its model, or its base with `base`), or by `worker`, a
        started worker of the same model on the same board (the same key)."""
        self.active = pair.profile.emulated
        keyed = worker or pair.worker
        fields = (keyed.answer_key(base) if self.active else {}) | {"op": op} | identity
        self.key = key_text(fields)
        name = hashlib.sha256(self.key.encode()).hexdigest()[:40]
        self.path = cache_folder() / f"text-{name}.json"
        self.parts: dict[int, Any] = {}
        self.cost_s: float | None = None  # the price of one part on the board
        self.count: int | None = None  # how many parts there are (windows of the text)
        if self.active:
            self._read()

    def _read(self) -> None:
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if document.get("key") != self.key:
            return
        self.parts = {int(k): v for k, v in document.get("parts", {}).items()}
        self.cost_s = document.get("cost_s")
        self.count = document.get("count")

    def write(self) -> None:
        """Keep what is known (a cache that cannot be written is only a slower next session)."""
        if not self.active:
            return
        document = {"key": self.key, "cost_s": self.cost_s, "count": self.count,
                    "parts": self.parts}  # fmt: skip
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(handle, "w") as stream:
                json.dump(document, stream)
            os.replace(temporary, self.path)
        except OSError:
            pass


def text_identity(model: ModelSpec) -> dict[str, Any]:
    """What a text suite's board answers depend on beyond the worker's key: text, lengths."""
    settings = model.generate
    assert settings is not None
    text = text_of(model).encode()
    return {"text_sha256": hashlib.sha256(text).hexdigest(), "window": settings.window,
            "stride": settings.stride, "new_tokens": settings.new_tokens}  # fmt: skip
