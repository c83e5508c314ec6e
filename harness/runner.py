"""One worker per (model, device): started on first use, shared by that pair's suites.

A worker that crashes or hangs is discarded; the next suite of the pair starts a fresh one, unless
the failure came while loading the model (it would only repeat), which is remembered and reported
by every later suite of the pair.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backends import backend_for
from harness.backends.base import (
    BackendUnavailable,
    Target,
    WorkerClient,
    WorkerCrashed,
    WorkerError,
    WorkerFailure,
)
from harness.baseline import Baseline
from harness.config import HarnessConfig, ModelSpec
from harness.devices import DeviceProfile
from harness.runtimes import format_of

START_TIMEOUT_S = 120.0  # emulated start-up (runtime import under QEMU) takes seconds
BASE_ID = "baseline"  # the base model's id inside the pair's worker


class PairFailure(Exception):
    """The pair's worker could not be started or could not load the model."""

    def __init__(self, message: str, *, skip: bool = False, oom: bool = False) -> None:
        super().__init__(message)
        self.skip = skip
        self.oom = oom


@dataclass
class Pair:
    model: ModelSpec
    profile: DeviceProfile
    config: HarnessConfig
    client: WorkerClient | None = None
    target: Target | None = None
    hello: dict[str, Any] = field(default_factory=dict)
    loaded: dict[str, Any] = field(default_factory=dict)
    failure: PairFailure | None = None  # sticky: start/load failures repeat
    pool: PairPool | None = None
    base: ModelSpec | None = None  # the baseline's version of the model, measured alongside
    base_missing: str | None = None  # why there is no base, under --baseline
    base_loaded: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)  # suite -> stored record
    baseline_label: str = ""
    baseline_other_machine: bool = False  # a stored baseline measured on another machine

    @property
    def key(self) -> str:
        return f"{self.model.name}@{self.profile.name}"

    def worker(self) -> WorkerClient:
        """The live worker with the model loaded, started if needed."""
        if self.failure is not None:
            raise self.failure
        if self.client is not None:
            return self.client
        if self.model.problems:
            self.failure = PairFailure("; ".join(self.model.problems))
            raise self.failure
        models = [self.model] + ([self.base] if self.base else [])
        try:
            self.target, client, self.hello = self._start(models)
            self.loaded = self._load(client, self.target, self.model, None)
            if self.base is not None:
                self.base_loaded = self._load(client, self.target, self.base, BASE_ID)
        except PairFailure as failure:
            self.failure = failure
            raise
        self.client = client
        return client

    def _start(self, models: list[ModelSpec]) -> tuple[Target, WorkerClient, dict[str, Any]]:
        from harness.safety import UnsafeModel, check_model_file

        files = [m.path for m in models] + ([self.model.dataset] if self.model.dataset else [])
        for model in models:
            try:
                files += check_model_file(model.path)
            except UnsafeModel as exc:
                raise PairFailure(str(exc)) from None
        try:
            target = backend_for(self.profile).start(self.profile, files, self.profile.threads)
        except BackendUnavailable as exc:
            raise PairFailure(str(exc), skip=exc.skip) from None
        client = WorkerClient(target, self.profile.name)
        formats = sorted({format_of(m.path) for m in models})
        try:
            hello = client.request("hello", START_TIMEOUT_S, formats=formats)
        except WorkerFailure as exc:
            raise PairFailure(str(exc)) from None
        return target, client, hello

    def _load(
        self, client: WorkerClient, target: Target, model: ModelSpec, model_id: str | None
    ) -> dict[str, Any]:
        """Load `model` in the worker under `model_id` (default: the model's name)."""
        try:
            return client.request(
                "load",
                self.config.timeout_s,
                model_id=model_id or model.name,
                path=target.remote(model.path),
                dataset=target.remote(model.dataset) if model.dataset else None,
                threads=self.profile.threads,
                output=model.output,
                input_shapes={k: list(v) for k, v in model.input_shapes.items()},
                input_values=dict(model.input_values),
                accelerator=self.profile.accelerator,
                config_file=str(self.config.source),
            )
        except WorkerError as exc:
            client.close()
            which = "baseline " if model_id == BASE_ID else ""
            raise PairFailure(f"{which}{model.path.name} on {self.profile.name}: {exc}") from None
        except WorkerFailure as exc:
            oom = isinstance(exc, WorkerCrashed) and "OOM-killed" in str(exc)
            raise PairFailure(str(exc), oom=oom) from None

    def fresh_peak_kb(self, model: ModelSpec) -> tuple[int, int]:
        """(empty peak, peak after load and one run) of `model` in a worker of its own: memory
        figures of two models cannot be told apart inside one process."""
        target, client, hello = self._start([model])
        try:
            loaded = self._load(client, target, model, None)
        finally:
            client.close()
        return int(hello["empty_peak_kb"]), int(loaded["peak_kb"])

    def request(self, op: str, base: bool = False, **arguments: Any) -> dict[str, Any]:
        """A request about the model (or, with `base`, its baseline) to the pair's worker; a
        crash or hang discards the worker."""
        client = self.worker()
        model_id = BASE_ID if base else self.model.name
        try:
            return client.request(op, self.config.timeout_s, model_id=model_id, **arguments)
        except WorkerFailure:
            self.client = None
            raise

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class PairPool:
    """The session's pairs, keyed by (model, device)."""

    def __init__(self, config: HarnessConfig, baseline: Baseline | None = None) -> None:
        self.config = config
        self.baseline = baseline
        self.pairs: dict[tuple[str, str], Pair] = {}
        self._native_empty: dict[tuple[str, ...], int] = {}
        self._host_reference: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._scratch: Path | None = None

    def scratch(self) -> Path:
        """A folder for files the session makes (generated inputs), removed at the end."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="harness-"))
        return self._scratch

    def get(self, model: ModelSpec, profile: DeviceProfile) -> Pair:
        key = (model.name, profile.name)
        if key not in self.pairs:
            pair = Pair(model, profile, self.config, pool=self)
            if self.baseline is not None:
                pair.base = self.baseline.models.get(model.name)
                pair.base_missing = self.baseline.missing.get(model.name)
                pair.baseline_label = self.baseline.label
                if self.baseline.fingerprint is not None:
                    from harness.store import machine_fingerprint

                    pair.baseline_other_machine = self.baseline.fingerprint != machine_fingerprint()
                pair.stored = {
                    suite: record
                    for (name, device, suite), record in self.baseline.stored.items()
                    if name == model.name and device == profile.name
                }
                if not pair.stored and self.baseline.kind == "results" and not pair.base_missing:
                    pair.base_missing = f"{self.baseline.source} holds no results for {key}"
            self.pairs[key] = pair
        return self.pairs[key]

    def native_empty_peak_kb(self, formats: tuple[str, ...]) -> int:
        """Peak of an empty worker (numpy + runtime imported, no model) run natively here: what a
        board's own Python + runtime cost, without an emulator's overhead. Measured once."""
        if formats not in self._native_empty:
            from harness.devices import load_profiles

            profile = load_profiles()["host"]
            target = backend_for(profile).start(profile, [], 1)
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

            host = Pair(model, load_profiles()["host"], self.config)
            try:
                self._host_reference[key] = host.request("evaluate", task=task)
            finally:
                host.close()
        return self._host_reference[key]

    def release(self, model: str, device: str) -> None:
        pair = self.pairs.get((model, device))
        if pair is not None:
            pair.close()

    def close(self) -> None:
        for pair in self.pairs.values():
            pair.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
