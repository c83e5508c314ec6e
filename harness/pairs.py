"""Workers and pairs: one worker per (model, device), started on first use and shared by that
pair's suites.

- `start_worker` and `load_model`: the one start-and-load exchange with a worker.
- `WorkerHandle`: the lifecycle of one pair's worker. A worker that crashes or hangs is
  discarded; the next request starts a fresh one, unless the failure came while starting or
  loading (it would only repeat), which is remembered and raised again by every later suite of
  the pair. On an
  emulated board it holds only the dataset rows it is answering, and the rows it answered are
  kept across sessions (harness.answers_cache).
- `Pair`: what a suite works with: the model, the device, the config, the pair's worker, the
  baseline context resolved once for the pair, and what the session's pairs share.
- `PairPool`: the session's pairs. Told the order the items will run in (not under xdist), it
  starts and greets the next emulated pair's worker in the background, one at a time, while the
  items before it run (the host's measure on one thread: host profile threads = 1): a container
  start and the runtime's import under QEMU cost seconds. The model is loaded when an item asks:
  its first inference prices the plan, and run beside other work it priced it up to twice as
  high (MobileNetV2 fp32 on rpi4: 7.4-8.1 s against 3.7-5.5 s), shrinking the plan.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness import answers_cache
from harness.answers_cache import AnswerCache, RunCache
from harness.backends import backend_for
from harness.backends.base import (
    BackendUnavailable,
    Target,
    WorkerClient,
    WorkerCrashed,
    WorkerError,
    WorkerFailure,
    greet,
    load,
)
from harness.baseline import Baseline, BaselineContext
from harness.config import HarnessConfig, ModelSpec
from harness.devices import DeviceProfile
from harness.emulation_plan import Plan, make_plan
from harness.identity import content_sha256, model_sha256
from harness.progress import silent

START_TIMEOUT_S = 120.0  # emulated start-up (runtime import under QEMU) takes seconds
BASE_ID = "baseline"  # the base model's id inside the pair's worker
EVALUATE_CHUNK_S = 20.0  # device work per evaluate request when sampling an expensive device


class PairFailure(Exception):
    """The pair's worker could not be started or could not load the model."""

    def __init__(self, message: str, *, skip: bool = False, oom: bool = False) -> None:
        super().__init__(message)
        self.skip = skip
        self.oom = oom


def start_worker(
    profile: DeviceProfile, models: list[ModelSpec]
) -> tuple[Target, WorkerClient, dict[str, Any]]:
    """A worker on `profile` that can see the files of `models`, greeted: (target, client,
    hello). Model files are checked before anything starts."""
    from harness.external_data import UnsafeModel, check_model_file

    files = [m.path for m in models] + [m.dataset for m in models if m.dataset]
    for model in models:
        try:
            files += check_model_file(model.path)
        except UnsafeModel as exc:
            raise PairFailure(str(exc)) from None
    try:
        target = backend_for(profile).start(profile, sorted(set(files)), profile.threads)
    except BackendUnavailable as exc:
        raise PairFailure(str(exc), skip=exc.skip) from None
    client = WorkerClient(target, profile.name)
    try:
        hello = greet(client, [m.path for m in models], START_TIMEOUT_S)
    except WorkerFailure as exc:
        raise PairFailure(str(exc)) from None
    return target, client, hello


def load_model(
    client: WorkerClient,
    target: Target,
    profile: DeviceProfile,
    model: ModelSpec,
    model_id: str,
    timeout_s: float,
    config_file: Path,
    rows: list[int] | None = None,
) -> dict[str, Any]:
    """Load `model` in the worker under `model_id` (holding only the dataset `rows`, when
    given); a refusal or a crash is a PairFailure."""
    try:
        return load(
            client,
            model_id,
            model.path,
            model.dataset,
            timeout_s,
            threads=profile.threads,
            output=model.output,
            input_shapes={k: list(v) for k, v in model.input_shapes.items()},
            input_values=dict(model.input_values),
            accelerator=profile.accelerator,
            config_file=str(config_file),
            **({"rows": rows} if rows is not None and model.dataset else {}),
            **({"text_options": model.generate.text_options()} if model.generate else {}),
        )
    except WorkerError as exc:
        client.close()
        which = "baseline " if model_id == BASE_ID else ""
        raise PairFailure(f"{which}{model.path.name} on {profile.name}: {exc}") from None
    except WorkerFailure as exc:
        oom = isinstance(exc, WorkerCrashed) and "OOM-killed" in str(exc)
        raise PairFailure(str(exc), oom=oom) from None


@dataclass
class WorkerHandle:
    """One pair's worker: the model (and its base, when one is measured alongside) loaded."""

    model: ModelSpec
    profile: DeviceProfile
    config: HarnessConfig
    base: ModelSpec | None = None
    client: WorkerClient | None = None
    target: Target | None = None
    hello: dict[str, Any] = field(default_factory=dict)
    loaded: dict[str, Any] = field(default_factory=dict)
    base_loaded: dict[str, Any] = field(default_factory=dict)
    failure: PairFailure | None = None  # sticky: start/load failures repeat
    # A start in the background (PairPool.start_ahead) and an item's start wait for each other.
    _starting: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _greeted: WorkerClient | None = field(default=None, repr=False)  # started ahead, no model

    def start(self) -> WorkerClient:
        """The live worker with the model loaded, started if needed."""
        with self._starting:
            return self._start()

    def _start(self) -> WorkerClient:
        if self.failure is not None:
            raise self.failure
        if self.client is not None:
            return self.client
        if self.model.problems:
            self.failure = PairFailure("; ".join(self.model.problems))
            raise self.failure
        try:
            client = self._greeted if self._greeted is not None else self._greet()
            self._greeted = None
            self.loaded = self._load(client, self.model, self.model.name)
            if self.base is not None:
                self.base_loaded = self._load(client, self.base, BASE_ID)
        except PairFailure as failure:
            self.failure = failure
            raise
        self.client = client
        return client

    def _greet(self) -> WorkerClient:
        self.target, client, self.hello = start_worker(
            self.profile, [self.model] + ([self.base] if self.base else [])
        )
        return client

    def greet_ahead(self) -> None:
        """Start and greet the worker without loading the model: the first inference, which
        prices the plan, runs when an item asks, not beside the items before it."""
        with self._starting:
            if self.model.problems or self.failure is not None:
                return
            if self.client is not None or self._greeted is not None:
                return
            try:
                self._greeted = self._greet()
            except PairFailure as failure:
                self.failure = failure

    @property
    def emulated(self) -> bool:
        """An emulated board: it holds only the rows it answers, and its answers are kept."""
        return self.profile.emulated

    def _load(self, client: WorkerClient, model: ModelSpec, model_id: str) -> dict[str, Any]:
        assert self.target is not None
        return load_model(
            client,
            self.target,
            self.profile,
            model,
            model_id,
            self.config.timeout_s,
            self.config.source,
            rows=[0] if self.emulated else None,  # the first row: the first run's input
        )

    def request(self, op: str, base: bool = False, **arguments: Any) -> dict[str, Any]:
        """A request about the model (or, with `base`, its base); a crash or hang discards
        the worker."""
        client = self.start()
        model_id = BASE_ID if base else self.model.name
        try:
            return client.request(op, self.config.timeout_s, model_id=model_id, **arguments)
        except WorkerFailure:
            self.client = None
            raise

    def evaluate(
        self,
        task: str,
        indices: list[int],
        progress: Callable[[str, int, int], None] = silent,
        base: bool = False,
    ) -> dict[str, Any]:
        """The model's (or its base's) answers on the dataset rows at `indices`, asked in
        requests of about EVALUATE_CHUNK_S each (progress between them; none near timeout_s).
        On an emulated board, rows answered in an earlier session come from the answer cache
        (`from_cache` says how many) and the worker holds only the rows of the request."""
        self.start()
        cache = self._answer_cache(task, base) if self.emulated else None
        known = cache.read() if cache is not None else {}
        asked = answers_cache.missing(known, dict.fromkeys(indices))
        loaded = self.base_loaded if base else self.loaded
        cost = max(float(loaded.get("first_run_s", 0.0)), 1e-6)
        per_request = max(1, int(EVALUATE_CHUNK_S / cost))
        for begin in range(0, len(asked), per_request):
            chunk = asked[begin : begin + per_request]
            if self.emulated:  # row 0 stays held: latency times the first row
                self.request("hold", base, rows=[0, *chunk])
            part = self.request("evaluate", base, task=task, indices=chunk)
            known |= answers_cache.rows_of(part, chunk)
            progress("answers", begin + len(chunk), len(asked))
        if cache is not None and asked:
            cache.write(known)
        merged = answers_cache.result_of(known, indices)
        fresh = set(asked)
        merged["from_cache"] = sum(i not in fresh for i in indices)
        return merged

    def _answer_cache(self, task: str, base: bool) -> AnswerCache:
        """The answer cache of this model's (or its base's) dataset rows on this board."""
        model = self.base if base and self.base is not None else self.model
        assert model.dataset is not None
        fields = self.answer_key(base) | {
            "op": "evaluate",
            "task": task,
            "dataset_sha256": content_sha256(model.dataset),
        }
        return answers_cache.AnswerCache(fields)

    def run_cache(self) -> RunCache:
        """The cache of this model's `run` answers on this board (generated inputs)."""
        return answers_cache.RunCache(self.answer_key(False) | {"op": "run", "reset": True})

    def answer_key(self, base: bool) -> dict[str, Any]:
        """Everything this model's (or its base's) answers on this board depend on, but the
        inputs (harness.answers_cache)."""
        from harness import __version__

        self.start()
        model = self.base if base and self.base is not None else self.model
        loaded = self.base_loaded if base else self.loaded
        assert self.target is not None
        limits = self.target.limits
        return {
            "model_sha256": model_sha256(model.path),
            "output": loaded.get("output"),
            "input_shapes": loaded.get("input_shapes"),
            "input_values": {k: np.asarray(v).tolist() for k, v in model.input_values.items()},
            "runtime": [loaded.get(k) for k in ("runtime", "runtime_version", "provider")],
            "image": limits.get("image"),
            "qemu_cpu": limits.get("qemu_cpu"),
            "emulator_sha256": answers_cache.emulator_sha256(self.profile.target_arch),
            "versions": self.hello.get("versions"),
            "python": self.hello.get("python"),
            "machine": self.hello.get("machine"),
            "threads": self.profile.threads,
            "accelerator": self.profile.accelerator,
            "harness": [__version__, answers_cache.worker_sources_sha256()],
        }

    def close(self) -> None:
        for client in (self.client, self._greeted):
            if client is not None:
                client.close()
        self.client = self._greeted = None


class Shared:
    """What a session's pairs share: a scratch folder, and figures of this host measured once
    (the native empty worker's peak, each model's predictions natively)."""

    def __init__(self, config: HarnessConfig) -> None:
        self.config = config
        self._native_empty: dict[tuple[str, ...], int] = {}
        self._host_reference: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._scratch: Path | None = None

    def scratch(self) -> Path:
        """A folder for files the session makes (generated inputs), removed at the end."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="harness-"))
        return self._scratch

    def native_empty_peak_kb(self, formats: tuple[str, ...], files: tuple[Path, ...] = ()) -> int:
        """Peak of an empty worker (numpy + runtime imported, no model) run natively here: what a
        board's own Python + runtime cost, without an emulator's overhead. Measured once. `files`
        the worker may see (a GGUF model's: its worker runs under the llama.cpp set's loader)."""
        if formats not in self._native_empty:
            from harness.devices import load_profiles

            profile = load_profiles()["host"]
            target = backend_for(profile).start(profile, list(files), 1)
            client = WorkerClient(target, "host")
            try:
                hello = client.request("hello", START_TIMEOUT_S, formats=list(formats))
            finally:
                client.close()
            self._native_empty[formats] = int(hello["empty_peak_kb"])
        return self._native_empty[formats]

    def host_reference(self, model: ModelSpec, task: str) -> dict[str, Any]:
        """The model's predictions on this host, natively: what device results are compared
        with (different CPU kernels give different last digits). Computed once per model."""
        key = (model.name, task, str(model.dataset))
        if key not in self._host_reference:
            from harness.devices import load_profiles

            host = WorkerHandle(model, load_profiles()["host"], self.config)
            try:
                self._host_reference[key] = host.request("evaluate", task=task)
            finally:
                host.close()
        return self._host_reference[key]

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


@dataclass
class Pair:
    """What a suite works with for one (model, device)."""

    model: ModelSpec
    profile: DeviceProfile
    config: HarnessConfig
    worker: WorkerHandle
    baseline: BaselineContext
    shared: Shared
    _plan: Plan | None = field(default=None, init=False)
    # What the running item reports its progress to (harness.progress); set by the item.
    progress: Callable[[str, int, int], None] = field(default=silent, init=False)

    @property
    def key(self) -> str:
        return f"{self.model.name}@{self.profile.name}"

    # The worker's state, read by the suites.
    @property
    def target(self) -> Target | None:
        return self.worker.target

    @property
    def hello(self) -> dict[str, Any]:
        return self.worker.hello

    @property
    def loaded(self) -> dict[str, Any]:
        return self.worker.loaded

    def start(self) -> WorkerClient:
        return self.worker.start()

    def request(self, op: str, base: bool = False, **arguments: Any) -> dict[str, Any]:
        return self.worker.request(op, base, **arguments)

    @property
    def plan(self) -> Plan:
        """How much each suite does here, from what the first inference at load cost."""
        if self._plan is None:
            self.start()
            samples = int(self.loaded.get("samples", 0))
            agreement_min = None
            cached = 0
            if self.profile.emulated and samples:
                agreement_min = self.model.gates_for(self.profile.name).device_top1_min
                cached = self._answered_before(samples)
            self._plan = make_plan(
                self.profile.name,
                self.profile.emulated,
                float(self.loaded.get("first_run_s", 0.0)),
                samples,
                self.config,
                agreement_min=agreement_min,
                cached=cached,
                generative=self.model.task == "generate",
            )
        return self._plan

    def _answered_before(self, samples: int) -> int:
        """Leading rows of the seeded sample order this board answered in earlier sessions
        (harness.answers_cache): a sample of that size costs nothing, a larger one extends it."""
        from harness.emulation_plan import cached_prefix

        if self.model.dataset is None:
            return 0
        try:
            with np.load(self.model.dataset) as data:
                labels = data["y"] if "y" in data.files else None
        except (OSError, ValueError):
            return 0
        if labels is None:
            return 0
        task = self.model.task or ("classification" if labels.dtype.kind in "iub" else "regression")
        answered = self.worker._answer_cache(task, False).read()
        return cached_prefix(samples, self.config.seed, answered)

    @property
    def has_plan(self) -> bool:
        return self._plan is not None

    def planned(self) -> Pair:
        """This pair with the latency and robustness settings its plan scales (an expensive
        device runs fewer, stated in the plan); unchanged where inference is cheap."""
        plan = self.plan
        if not plan.emulated:
            return self
        latency = replace(
            self.config.latency,
            warmup=plan.latency_warmup,
            samples=plan.latency_samples,
            min_samples=plan.latency_min_samples,
            time_budget_s=max(self.config.latency.time_budget_s, plan.latency_budget_s),
        )
        robustness = replace(self.config.robustness, examples=plan.robustness_examples)
        config = replace(self.config, latency=latency, robustness=robustness)
        planned = replace(self, config=config)
        planned._plan, planned.progress = plan, self.progress
        return planned

    def sibling(self, model: ModelSpec) -> Pair:
        """Another model on this device, as a pair of its own (no baseline); the caller closes
        its worker."""
        return Pair(model, self.profile, self.config, self.other(model), BaselineContext(),
                    self.shared)  # fmt: skip

    def other(self, model: ModelSpec) -> WorkerHandle:
        """A worker of its own for another model on this device (the caller closes it)."""
        return WorkerHandle(model, self.profile, self.config)

    def fresh_peak_kb(self, model: ModelSpec) -> tuple[int, int, int]:
        """(empty peak, peak after load and one run, RSS then) of `model` in a worker of its
        own: memory figures of two models (or of a model and a dataset) cannot be told apart
        inside one process."""
        worker = self.other(model)
        try:
            worker.start()
            loaded = worker.loaded
            return int(worker.hello["empty_peak_kb"]), int(loaded["peak_kb"]), int(loaded["rss_kb"])
        finally:
            worker.close()


class PairPool:
    """The session's pairs, keyed by (model, device)."""

    def __init__(self, config: HarnessConfig, baseline: Baseline | None = None) -> None:
        self.config = config
        self.baseline = baseline
        self.shared = Shared(config)
        self.pairs: dict[tuple[str, str], Pair] = {}
        self.order: list[tuple[ModelSpec, DeviceProfile]] = []  # as the items will run
        self._ahead: Future[None] | None = None  # the background start in flight
        self._released: set[tuple[str, str]] = set()

    def get(self, model: ModelSpec, profile: DeviceProfile) -> Pair:
        pair = self._pair(model, profile)
        self.start_ahead((model.name, profile.name))
        return pair

    def start_ahead(self, current: tuple[str, str]) -> None:
        """Start and greet the worker of the next emulated pair after `current` in `order` in
        the background, one at a time; a failure stays with its pair (its items report it)."""
        if not self.order or (self._ahead is not None and not self._ahead.done()):
            return
        keys = [(m.name, p.name) for m, p in self.order]
        after = keys.index(current) + 1 if current in keys else 0
        for (model, profile), key in zip(self.order[after:], keys[after:], strict=True):
            if not profile.emulated or key == current or key in self._released:
                continue
            worker = self._pair(model, profile).worker
            if worker.client is not None or worker._greeted is not None:
                continue
            background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="harness-ahead")
            self._ahead = background.submit(worker.greet_ahead)
            background.shutdown(wait=False)
            return

    def _pair(self, model: ModelSpec, profile: DeviceProfile) -> Pair:
        key = (model.name, profile.name)
        if key not in self.pairs:
            context = (
                self.baseline.context(model, profile.name)
                if self.baseline is not None
                else BaselineContext()
            )
            worker = WorkerHandle(model, profile, self.config, base=context.base)
            self.pairs[key] = Pair(model, profile, self.config, worker, context, self.shared)
        return self.pairs[key]

    def release(self, model: str, device: str) -> None:
        self._released.add((model, device))
        pair = self.pairs.get((model, device))
        if pair is not None:
            pair.worker.close()

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.exception()  # a worker still starting is closed below, not left running
        for pair in self.pairs.values():
            pair.worker.close()
        self.shared.close()
