"""The suite registry: every suite declared once, in the order items run and tables list them.

A suite declares its name, its headline figure (what every table, report and trend shows for it),
when it applies to a model, and where its measuring code lives (`harness.suites.<name>.measure`,
imported only when an item runs, so reports can read this registry without the backends).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.results import SKIPPED

if TYPE_CHECKING:
    from harness.config import HarnessConfig, ModelSpec
    from harness.pairs import Pair
    from harness.results import Measurement


Applies = Callable[["ModelSpec", "HarnessConfig"], bool]  # does the suite apply to the model


@dataclass(frozen=True)
class Suite:
    name: str
    headline: tuple[str, ...]  # the figure shown for it: the first of these a record holds
    applies: Applies
    static: bool = False  # reads the model file only; nothing runs on the device

    def measure(self, pair: Pair) -> Measurement:
        name = self.name
        if name == "memory" and pair.model.task == "generate":
            name = "context_memory"  # a language model's peak after filling its context
        module = importlib.import_module(f"harness.suites.{name}")
        measurement: Measurement = module.measure(pair)
        return measurement

    def headline_of(self, figures: Mapping[str, Any]) -> str | None:
        return next((f for f in self.headline if f in figures), None)


def _always(model: ModelSpec, config: HarnessConfig) -> bool:
    return True


def _has_graph(model: ModelSpec, config: HarnessConfig) -> bool:
    """A model with an operator graph to check: not a GGUF file (llama.cpp checks its
    architecture and tensor types when it loads it, and a refusal fails every item)."""
    return model.path.suffix.lower() != ".gguf"


def _has_dataset(model: ModelSpec, config: HarnessConfig) -> bool:
    return model.dataset is not None


def _compares_outputs(model: ModelSpec, config: HarnessConfig) -> bool:
    """A configured comparison: another variant (`parity_with`) or a device-parity gate."""
    from harness.config import DEVICE_PARITY_GATES

    specs = [model.gates, *model.device_gates.values()]
    return model.parity_with is not None or any(
        getattr(s, g) is not None for s in specs for g in DEVICE_PARITY_GATES
    )


def _counts(model: ModelSpec, config: HarnessConfig) -> bool:
    specs = [model.gates, *model.device_gates.values()]
    return config.counting or any(s.instructions_max_regression is not None for s in specs)


def _generates_inputs(model: ModelSpec, config: HarnessConfig) -> bool:
    return config.robustness.examples > 0 and not _generative(model, config)


def _generative(model: ModelSpec, config: HarnessConfig) -> bool:
    return model.task == "generate"


def _classifier(applies: Applies) -> Applies:
    """A suite of one-pass models (classifiers, regressors): not for language models."""

    def check(model: ModelSpec, config: HarnessConfig) -> bool:
        return not _generative(model, config) and applies(model, config)

    return check


def _has_text(model: ModelSpec, config: HarnessConfig) -> bool:
    return _generative(model, config) and model.text is not None


def _has_prompts(model: ModelSpec, config: HarnessConfig) -> bool:
    return _generative(model, config) and bool(model.prompts)


def _compares_tokens(model: ModelSpec, config: HarnessConfig) -> bool:
    return _has_text(model, config) and model.parity_with is not None


def _generates_prompts(model: ModelSpec, config: HarnessConfig) -> bool:
    return _generative(model, config) and config.robustness.examples > 0


def _memory(model: ModelSpec, config: HarnessConfig) -> bool:
    """Every one-pass model; a language model with a text to fill its context from."""
    return not _generative(model, config) or model.text is not None


def _collected_apart(model: ModelSpec, config: HarnessConfig) -> bool:
    return False  # policy items exist per model under a baseline checkout (harness.items)


SUITES: tuple[Suite, ...] = (
    Suite("policy", ("loosened",), _collected_apart, static=True),
    Suite("size", ("size_kb",), _always, static=True),
    Suite("operators", ("errors",), _has_graph, static=True),
    Suite("accuracy", ("accuracy", "mae"), _classifier(_has_dataset)),
    # Language models (harness.suites.perplexity ... prompt_robustness; docs/language-models.md)
    Suite("perplexity", ("perplexity",), _has_text),
    Suite("answers", ("answer_accuracy",), _has_prompts),
    Suite(
        "parity",
        ("parity_top1", "device_top1", "parity_max_abs_error"),
        _classifier(_compares_outputs),
    ),  # fmt: skip
    Suite("token_parity", ("kld_mean", "token_agreement"), _compares_tokens),
    Suite("latency", ("estimated_ms", "p90_ms"), _classifier(_always)),
    Suite("generation", ("tokens_per_s",), _has_text),
    # Under emulation the gated figure is the board estimate: show that one everywhere. A
    # language model's memory is its peak at the context length (harness.suites.context_memory).
    Suite("memory", ("board_peak_mb", "peak_mb"), _memory),
    Suite("robustness", ("examples",), _classifier(_generates_inputs)),
    Suite("prompt_robustness", ("examples",), _generates_prompts),
    Suite("instructions", ("instructions_per_inference",), _classifier(_counts)),
)
BY_NAME: Mapping[str, Suite] = {s.name: s for s in SUITES}
ORDER: Mapping[str, int] = {s.name: i for i, s in enumerate(SUITES)}


def suite(name: str) -> Suite:
    return BY_NAME[name]


def suites_for(model: ModelSpec, config: HarnessConfig) -> list[Suite]:
    """The suites that apply to `model`, in order."""
    return [s for s in SUITES if s.applies(model, config)]


def headline_of(record: Mapping[str, Any]) -> str | None:
    """The headline figure a record holds (None for a suite not in the registry)."""
    known = BY_NAME.get(str(record["suite"]))
    return known.headline_of(record.get("figures") or {}) if known else None


def headline_figures() -> tuple[str, ...]:
    """Every suite's headline figures: what the history draws trends of."""
    return tuple(f for s in SUITES for f in s.headline)


def item_key(suite: str, model: str, device: str) -> str:
    """An item's name as records and reports write it: `latency[digits@rpi4]`."""
    return f"{suite}[{model}@{device}]"


def missing_items(
    expected: Iterable[str], records: Iterable[Mapping[str, Any]], allow_skipped: bool = False
) -> list[str]:
    """The `expected` items (item_key names) without a record that ran: a skipped one did
    not, unless `allow_skipped` (--allow-unmeasured: a GPU device on a machine without one)."""
    reported = {
        item_key(str(r["suite"]), str(r["model"]), str(r["device"]))
        for r in records
        if allow_skipped or r["verdict"]["status"] != SKIPPED
    }
    return [name for name in expected if name not in reported]
