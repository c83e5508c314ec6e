"""The worker's request loop and its operations.

Operations: hello, load, hold, evaluate, bench, run, memory, shutdown. Timing loops run here, so
no inter-process call sits inside a timed inference.

A model loaded with `rows` holds only those dataset rows (an emulated board answering a sample of
a large test set); `hold` swaps them for others, `evaluate` answers held rows by dataset index.
"""

from __future__ import annotations

import os
import platform
import queue
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from harness.runtimes import TEXT_FORMATS, format_of, open_runtime
from harness.runtimes.base import ModelLoadError, Runtime
from harness.worker import generate
from harness.worker.feeds import (
    DataError,
    Feeds,
    build_feeds,
    dequantize,
    load_npz,
    load_npz_rows,
)
from harness.worker.protocol import decode, encode

SCORES_RETURNED_MAX = 1024  # per-sample score vectors up to this size travel back


BINARY_THRESHOLD = 0.5  # a one-value score output is the probability of class 1


def top_class(scores: np.ndarray) -> int:
    """The predicted class: the argmax of the scores, or for one score (a probability of the
    positive class) 1 where it reaches BINARY_THRESHOLD."""
    flat = scores.reshape(-1)
    if flat.size == 1:
        return int(flat[0] >= BINARY_THRESHOLD)
    return int(np.argmax(flat))


class RequestError(Exception):
    """A request the worker cannot serve (unknown op, unknown model id)."""


def proc_status_kb(field: str) -> int:
    """VmHWM / VmRSS of this process in kB, from /proc (0 where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _runtime_versions(formats: list[str]) -> dict[str, str]:
    versions = {"numpy": np.__version__}
    for fmt in formats:
        if fmt == "onnx":
            import onnxruntime

            versions["onnxruntime"] = onnxruntime.__version__
        elif fmt == "tflite":
            from harness.runtimes.tflite import _interpreter_class

            _, name, version = _interpreter_class()
            versions[name] = version
        elif fmt == "genai":
            import onnxruntime_genai

            versions["onnxruntime-genai"] = onnxruntime_genai.__version__
        elif fmt == "gguf":
            from harness.runtimes.llamacpp import library

            versions["llama.cpp"] = library().version
            # the C library this process runs on: the llama.cpp set's, under its loader
            versions["libc"] = os.confstr("CS_GNU_LIBC_VERSION") or "?"
    return versions


@dataclass
class LoadedModel:
    runtime: Runtime
    feeds: Feeds
    output_index: int
    held: list[int] | None = None  # the dataset rows the feeds hold, in order (None: all)
    # How the feeds were built, to build them again for other rows (`hold`).
    dataset: str = ""
    input_shapes: dict[str, list[int]] | None = None
    input_values: dict[str, Any] | None = None
    config_file: str = ""

    def position(self, index: int) -> int:
        """Where dataset row `index` lies in the feeds."""
        if self.held is None:
            return index
        try:
            return self.held.index(index)
        except ValueError:
            raise RequestError(f"dataset row {index} is not held; `hold` it first") from None


class Worker:
    def __init__(self) -> None:
        self.models: dict[str, LoadedModel] = {}
        self.text = generate.TextModels(self.status_kb)  # language models: worker/generate.py

    def status_kb(self, field: str) -> int:
        """A memory reading of this process (a counting worker reads none: see counting)."""
        return proc_status_kb(field)

    def hello(self, formats: list[str]) -> dict[str, Any]:
        versions = _runtime_versions(formats)
        return {
            "pid": os.getpid(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "versions": versions,
            # Peak of a worker with numpy and the runtime imported but no model loaded.
            "empty_peak_kb": self.status_kb("VmHWM"),
            "empty_rss_kb": self.status_kb("VmRSS"),
        }

    def load(
        self,
        model_id: str,
        path: str,
        threads: int,
        dataset: str | None = None,
        output: str | None = None,
        input_shapes: dict[str, list[int]] | None = None,
        input_values: dict[str, Any] | None = None,
        accelerator: str = "none",
        config_file: str = "the harness config",
        rows: list[int] | None = None,
        text_options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Open the model with its dataset (only the dataset `rows`, when given) and run it
        once. A language model (GenAI folder, GGUF file) loads with its `text_options`."""
        if format_of(path) in TEXT_FORMATS:
            return self.text.load(model_id, path, threads, accelerator, text_options)
        started = time.perf_counter()
        runtime = open_runtime(path, threads, accelerator)
        load_s = time.perf_counter() - started
        output_names = [spec.name for spec in runtime.outputs]
        if output is None:
            output_index = 0
        elif output in output_names:
            output_index = output_names.index(output)
        else:
            raise DataError(
                f"output = {output!r} in {config_file} names no model output; the model's outputs "
                f"are {output_names}"
            )
        held = sorted({int(r) for r in rows}) if rows is not None and dataset else None
        model = LoadedModel(
            runtime, Feeds({}, {}, {}, 0), output_index, held, dataset or "", input_shapes,
            input_values, config_file,
        )  # fmt: skip
        samples = self._build(model, held)
        feeds = model.feeds
        shapes = feeds.shapes()
        runtime.prepare(shapes)
        started = time.perf_counter()
        first = runtime.run(feeds.sample(0) if feeds.count else dict(feeds.constants))
        first_run_s = time.perf_counter() - started
        self.models[model_id] = model
        return {
            "runtime": runtime.name,
            "runtime_version": runtime.version,
            "provider": runtime.provider,
            "state": runtime.state,
            "inputs": [spec.as_json() for spec in runtime.inputs],
            "outputs": [spec.as_json() for spec in runtime.outputs],
            "output": output_names[output_index],
            "output_shape": list(first[output_index].shape),
            "input_shapes": {name: list(shape) for name, shape in shapes.items()},
            "samples": samples,  # in the dataset, held or not
            "held": len(held) if held is not None else feeds.count,
            "batch_assumed": list(feeds.batch_assumed),  # dynamic batch dims run at batch 1
            "load_s": load_s,
            "first_run_s": first_run_s,
            # Peak after loading the model and running it once: what the memory suite gates.
            "peak_kb": self.status_kb("VmHWM"),
            "rss_kb": self.status_kb("VmRSS"),
        }

    def _build(self, model: LoadedModel, rows: list[int] | None) -> int:
        """Build `model`'s feeds from its dataset (only `rows`, when given); returns the
        dataset's sample count."""
        data: dict[str, np.ndarray] | None
        if rows is not None:
            data, samples = load_npz_rows(model.dataset, rows)
        else:
            data = load_npz(model.dataset) if model.dataset else None
        model.feeds = build_feeds(
            model.runtime.inputs,
            data,
            model.dataset,
            model.input_shapes or {},
            model.input_values or {},
            model.config_file,
        )
        model.held = rows
        return samples if rows is not None else model.feeds.count

    def hold(self, model_id: str, rows: list[int]) -> dict[str, Any]:
        """Hold these dataset rows instead of those held (a model loaded with `rows` only)."""
        model = self._model(model_id)
        if model.held is None:
            raise RequestError(f"model {model_id!r} holds its whole dataset; nothing to hold")
        held = sorted({int(r) for r in rows})
        self._build(model, held)
        return {"held": len(held)}

    def _model(self, model_id: str) -> LoadedModel:
        if model_id not in self.models:
            raise RequestError(f"no model {model_id!r} loaded in this worker")
        return self.models[model_id]

    def evaluate(
        self,
        model_id: str,
        task: str,
        limit: int | None = None,
        indices: list[int] | None = None,
    ) -> dict[str, Any]:
        """Run every dataset sample (or the first `limit`, or those at `indices`: dataset rows,
        held); return top-1 classes or raw output values (no scoring), and which rows gave
        non-finite outputs. `task`: classification (top-1, and the values of small outputs),
        regression (values) or scores (both, whatever the output's size: parity compares them).

        A model that keeps state between runs inside it (TFLite variables) answers every
        sample from its initial state; state the model takes as an input comes with the sample.

        Top-1 of an output with one value per sample (a sigmoid: voice activity, a wake word)
        is class 1 where it is at least BINARY_THRESHOLD, else 0: its argmax would always be 0."""
        model = self._model(model_id)
        if not model.feeds.count:
            raise DataError("evaluate needs a dataset; this model was loaded without one")
        if indices is None and model.held is not None:
            held = len(model.held)
            raise RequestError(f"model {model_id!r} holds {held} dataset rows: name them")
        spec = model.runtime.outputs[model.output_index]
        count = model.feeds.count if limit is None else min(limit, model.feeds.count)
        chosen = list(range(count)) if indices is None else [int(i) for i in indices]
        if model.held is None and any(not 0 <= i < model.feeds.count for i in chosen):
            raise RequestError(f"indices outside the dataset's {model.feeds.count} samples")
        top1: list[int] = []
        values: list[np.ndarray] = []
        nonfinite: list[int] = []
        hidden = bool(model.runtime.state)  # a streaming model keeping state between runs
        for index in chosen:
            feeds = model.feeds.sample(model.position(index))
            if hidden:  # every sample from the initial state: answers do not depend on which
                model.runtime.reset()  # rows a device answers, nor in what order
            raw = model.runtime.run(feeds)[model.output_index]
            scores = dequantize(raw, spec)
            if not np.all(np.isfinite(scores)):
                nonfinite.append(index)
            if task in ("classification", "scores"):
                top1.append(top_class(scores))
            if task != "classification" or scores.size <= SCORES_RETURNED_MAX:
                values.append(scores.astype(np.float32).reshape(-1))
        result: dict[str, Any] = {
            "count": len(chosen),
            "nonfinite": len(nonfinite),
            "nonfinite_rows": nonfinite,
        }
        if task in ("classification", "scores"):
            result["top1"] = top1
        if values:  # raw scores too, for comparing devices (small outputs only)
            result["values"] = np.stack(values)
        return result

    def bench(
        self, model_id: str, samples: int, warmup: int = 0, count: bool = False
    ) -> dict[str, Any]:
        """Time `samples` inferences on the first dataset sample (or generated input).

        With `count`, marker system calls bracket the timed loop so that an instruction-counting
        emulator (harness.counting) counts exactly these inferences.
        """
        model = self._model(model_id)
        feeds = model.feeds.sample(0) if model.feeds.count else dict(model.feeds.constants)
        call = model.runtime.timed_call(feeds)
        for _ in range(warmup):
            call()
        clock = time.perf_counter_ns
        timings = [0] * samples
        if count:
            from harness.worker import markers

            markers.begin()
        for index in range(samples):
            started = clock()
            call()
            timings[index] = clock() - started
        if count:
            markers.end()
        return {"samples_ns": timings}

    def run(
        self, model_id: str, inputs: dict[str, np.ndarray], reset: bool = False
    ) -> dict[str, Any]:
        """One inference on caller-given inputs; outputs raw (not dequantized). With `reset`,
        from the model's initial state (what it kept from earlier runs is cleared first)."""
        model = self._model(model_id)
        if reset:
            model.runtime.reset()
        outputs = model.runtime.run(inputs)
        return {"outputs": {s.name: o for s, o in zip(model.runtime.outputs, outputs, strict=True)}}

    def memory(self) -> dict[str, Any]:
        return {"peak_kb": self.status_kb("VmHWM"), "rss_kb": proc_status_kb("VmRSS")}


OPERATIONS = ("hello", "load", "hold", "evaluate", "bench", "run", "memory")


ORPHANED_EXIT = 75  # the worker's status when it ended because its host went away


class _Orphaned:
    """The request lines, read by a thread of their own, so that the end of the input is seen
    while a request is being served: the host is then gone (pytest killed, its container's
    attach stream dropped) and nobody will read the reply, so the worker exits at once instead
    of finishing minutes of work for no one (a worker left at 200% CPU in its container).

    Each side sets its own flag, then reads the other's (the request loop: `busy`, then `ended`;
    the reader: `ended`, then `busy`), so a request that starts as the input ends is seen by one
    of them whichever comes first."""

    def __init__(self, requests: IO[str]) -> None:
        self.busy = threading.Event()
        self.ended = threading.Event()
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._requests = requests
        threading.Thread(target=self._read, name="harness-requests", daemon=True).start()

    def _read(self) -> None:
        for line in self._requests:
            self._lines.put(line)
        self.ended.set()
        if self.busy.is_set():
            os._exit(ORPHANED_EXIT)
        self._lines.put(None)

    def __iter__(self) -> Iterator[str]:
        while (line := self._lines.get()) is not None:
            yield line

    def starting(self, op: object) -> None:
        """A request begins (anything but shutdown): exit if the input has already ended."""
        self.busy.set()
        if op != "shutdown" and self.ended.is_set():
            os._exit(ORPHANED_EXIT)


def serve(
    requests: IO[str],
    replies: IO[bytes],
    worker: Worker | None = None,
    exit_when_orphaned: bool = False,
) -> None:
    """Answer requests until `shutdown` or the end of `requests`. With `exit_when_orphaned` (the
    worker process itself), the end of the input in the middle of a request ends the process."""
    worker = worker or Worker()
    watch = _Orphaned(requests) if exit_when_orphaned else None
    source: Iterable[str] = watch if watch is not None else requests
    for line in source:
        if not line.strip():
            continue
        request_id = None
        try:
            message = decode(line)
            op = message.pop("op", None)
            request_id = message.pop("id", None)
            if watch is not None:
                watch.starting(op)
            if op == "shutdown":
                replies.write(encode({"id": request_id, "ok": True, "result": {}}))
                return
            if op not in OPERATIONS + generate.OPERATIONS:
                known = ", ".join(OPERATIONS + generate.OPERATIONS)
                raise RequestError(f"unknown operation {op!r}; known: {known}")
            handler = worker.text if op in generate.OPERATIONS else worker
            reply = {"id": request_id, "ok": True, "result": getattr(handler, op)(**message)}
        except (ModelLoadError, DataError, RequestError, ValueError, TypeError) as exc:
            reply = {"id": request_id, "ok": False, "kind": type(exc).__name__, "error": str(exc)}
        except Exception as exc:  # a runtime failing mid-inference: report it, keep serving
            reply = {
                "id": request_id,
                "ok": False,
                "kind": type(exc).__name__,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=5),
            }
        finally:
            if watch is not None:
                watch.busy.clear()
        replies.write(encode(reply))


def main(worker: Worker | None = None, exit_when_orphaned: bool = True) -> None:
    # The protocol gets a private copy of stdout; fd 1 then points at stderr so that anything a
    # runtime prints cannot corrupt the reply stream.
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin, replies, worker, exit_when_orphaned)
