"""What the language-model suites share: scoring a text window by window (requests of a few
seconds, progress between them), the host's native reference, and the board's budgeted sample.

The emulation plan for language models (docs/language-models.md): quality is the same everywhere
but for the last digits of the kernels, so on an expensive (emulated) device it is computed
natively on this host, over the whole text or prompt set, and the board answers a seeded sample
of windows or prompts that fits `plan.budget_s`, priced by the first window it scored; the board's
agreement with the host on that sample, with its exact interval, decides `device_top1_min`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from harness.config import ModelSpec
from harness.plan import sample_indices
from harness.runner import Pair, Worker
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


def first_window(request: Requester, like: ModelSpec) -> tuple[float, int]:
    """(seconds one window of `like`'s text costs where `request` runs, how many windows the
    text has), from scoring its first window."""
    settings = like.generate
    assert settings is not None
    started = time.monotonic()
    reply = request("perplexity", text=text_of(like), window=settings.window,
                    stride=settings.stride, windows=[0])  # fmt: skip
    return time.monotonic() - started, int(reply["windows"])


def board_sample(pair: Pair, count: int, cost_s: float) -> list[int]:
    """Which of `count` windows (or prompts) the board answers: all that fit the plan's budget
    at `cost_s` each, else a seeded sample of at least MIN_WINDOWS."""
    budget = pair.config.plan.budget_s
    affordable = int(budget / max(cost_s, 1e-9))
    wanted = count if affordable >= count else max(MIN_WINDOWS, affordable)
    return sample_indices(count, min(count, wanted), pair.config.seed)


def on_host(model: ModelSpec, pair: Pair) -> Worker:
    """A worker for `model` on this host, natively (the reference; the caller closes it)."""
    from harness.devices import load_profiles

    return Worker(model, load_profiles()["host"], pair.config)


def in_background(work: Callable[[], dict[str, Any]]) -> Future[dict[str, Any]]:
    """Run `work` in a thread (the host's native reference while the board works)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="harness-host-reference")
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future
