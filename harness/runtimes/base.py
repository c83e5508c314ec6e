"""What every runtime offers the worker: tensor specs, shape fixing, and a run call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

Dim = int | str | None  # int: fixed; str/None: dynamic (named or anonymous)


class ModelLoadError(Exception):
    """The model file could not be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...] | None  # None: rank unknown
    dtype: str  # numpy dtype name
    quantization: Quantization | None = None

    @property
    def dynamic(self) -> bool:
        return self.shape is None or any(not isinstance(d, int) or d < 0 for d in self.shape)

    def as_json(self) -> dict[str, object]:
        q = self.quantization
        return {
            "name": self.name,
            "shape": None if self.shape is None else list(self.shape),
            "dtype": self.dtype,
            "quantization": None if q is None else {"scale": q.scale, "zero_point": q.zero_point},
        }


class Runtime(Protocol):
    name: str  # e.g. "onnxruntime"
    version: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    provider: str  # what actually executes: CPUExecutionProvider, XNNPACK, ...
    state: str  # how reset() clears state kept between runs, in words ("": no hidden state)

    def reset(self) -> None:
        """Start the next run from the model's initial state (streaming models keep some)."""

    def prepare(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Fix dynamic input shapes before the first run (TFLite must resize and allocate)."""

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; outputs in the order of `outputs`."""

    def timed_call(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        """A zero-argument call doing exactly one inference, as thin as a bare runtime loop."""


def quantization_or_none(scale: float, zero_point: int) -> Quantization | None:
    return Quantization(float(scale), int(zero_point)) if scale else None
