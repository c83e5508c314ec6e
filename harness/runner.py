"""One worker per (model, device): started on first use, shared by that pair's suites.

A worker that crashes or hangs is discarded; the next suite of the pair starts a fresh one, unless
the failure came while loading the model (it would only repeat), which is remembered and reported
by every later suite of the pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from harness.config import HarnessConfig, ModelSpec
from harness.devices import DeviceProfile
from harness.runtimes import format_of

START_TIMEOUT_S = 120.0  # emulated start-up (runtime import under QEMU) takes seconds to a minute


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
        files = [self.model.path] + ([self.model.dataset] if self.model.dataset else [])
        try:
            self.target = backend_for(self.profile).start(self.profile, files, self.profile.threads)
        except BackendUnavailable as exc:
            self.failure = PairFailure(str(exc), skip=exc.skip)
            raise self.failure from None
        client = WorkerClient(self.target, self.profile.name)
        try:
            self.hello = client.request(
                "hello", START_TIMEOUT_S, formats=[format_of(self.model.path)]
            )
            self.loaded = client.request(
                "load",
                self.config.timeout_s,
                model_id=self.model.name,
                path=self.target.remote(self.model.path),
                dataset=self.target.remote(self.model.dataset) if self.model.dataset else None,
                threads=self.profile.threads,
                output=self.model.output,
                input_shapes={k: list(v) for k, v in self.model.input_shapes.items()},
                input_values=dict(self.model.input_values),
                accelerator=self.profile.accelerator,
                config_file=str(self.config.source),
            )
        except WorkerError as exc:
            client.close()
            self.failure = PairFailure(f"{self.model.path.name} on {self.profile.name}: {exc}")
            raise self.failure from None
        except WorkerFailure as exc:
            oom = isinstance(exc, WorkerCrashed) and "OOM-killed" in str(exc)
            self.failure = PairFailure(str(exc), oom=oom)
            raise self.failure from None
        self.client = client
        return client

    def request(self, op: str, **arguments: Any) -> dict[str, Any]:
        """A request to the pair's worker; a crash or hang discards the worker."""
        client = self.worker()
        try:
            return client.request(op, self.config.timeout_s, model_id=self.model.name, **arguments)
        except WorkerFailure:
            self.client = None
            raise

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class PairPool:
    """The session's pairs, keyed by (model, device)."""

    def __init__(self, config: HarnessConfig) -> None:
        self.config = config
        self.pairs: dict[tuple[str, str], Pair] = {}

    def get(self, model: ModelSpec, profile: DeviceProfile) -> Pair:
        key = (model.name, profile.name)
        if key not in self.pairs:
            self.pairs[key] = Pair(model, profile, self.config)
        return self.pairs[key]

    def release(self, model: str, device: str) -> None:
        pair = self.pairs.get((model, device))
        if pair is not None:
            pair.close()

    def close(self) -> None:
        for pair in self.pairs.values():
            pair.close()
