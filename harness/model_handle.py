"""What the `harness_model` fixture hands a custom test: the model, running on the device."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.pairs import Pair


class ModelHandle:
    def __init__(self, pair: Pair) -> None:
        self.pair = pair

    @property
    def device(self) -> str:
        return self.pair.profile.name

    @property
    def inputs(self) -> list[dict[str, Any]]:
        self.pair.start()
        return list(self.pair.loaded["inputs"])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        self.pair.start()
        return list(self.pair.loaded["outputs"])

    def run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """One inference on the device; outputs by name, as the runtime returns them."""
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        outputs: dict[str, np.ndarray] = self.pair.request("run", inputs=arrays)["outputs"]
        return outputs
