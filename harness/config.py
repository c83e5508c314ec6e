"""The harness config, parsed and validated once into frozen dataclasses.

Read from `harness.toml` (keys at top level) or `pyproject.toml` (`[tool.harness]`). Structural
mistakes (unknown keys, wrong types, unknown devices) raise ConfigError naming the file, the key and
the fix. Problems with one model's files (missing model, unreadable dataset) are kept on that model
as `problems`: its items fail with the message while the rest of the session runs.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import catalogue
from harness.devices import DeviceProfile, load_profiles
from harness.errors import ConfigError, check_keys, expect_type
from harness.language_config import (
    GenerateSettings,
    Prompt,
    language_model_problem,
    load_prompts,
    parse_generate,
)

CONFIG_NAMES = ("harness.toml", "pyproject.toml")
SUITES = ("size", "accuracy", "latency", "memory")
TASKS = ("classification", "regression", "generate")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _overridden_by(self: GateSpec, other: GateSpec) -> GateSpec:
    """These thresholds with every one `other` sets in their place (a device's override)."""
    changes = {name: getattr(other, name) for name in GATE_KEYS}
    return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[type-var]


GATE_KEYS = tuple(catalogue.GATES)
if TYPE_CHECKING:

    class GateSpec:
        """Thresholds, one attribute per gate of the catalogue; None: the gate is not set."""

        def __init__(self, **thresholds: float | None) -> None: ...
        def __getattr__(self, gate: str) -> float | None: ...
        def overridden_by(self, other: GateSpec) -> GateSpec: ...

else:
    # One field per catalogue gate (its default, its meaning as the field's doc): a new gate is
    # a catalogue entry and the code that measures its figure, not a field written here too.
    GateSpec = make_dataclass(
        "GateSpec",
        [
            (g.name, float | None, field(default=g.default, metadata={"meaning": g.meaning}))
            for g in catalogue.GATES.values()
        ],
        frozen=True,
        namespace={
            "overridden_by": _overridden_by,
            "__doc__": "Thresholds, one field per gate of the catalogue; None: not set.",
            "__module__": __name__,  # make_dataclass's `module` argument is Python 3.12's
        },
    )

RELATIVE_GATES = catalogue.gates_of(relative=True)  # they need a baseline
FRACTION_GATES = catalogue.gates_of(fraction=True)  # thresholds in [0, 1]
PARITY_GATES = tuple(g for g in catalogue.GATES if g.startswith("parity_"))
DEVICE_PARITY_GATES = tuple(g for g in catalogue.GATES if g.startswith("device_"))


@dataclass(frozen=True)
class RobustnessSettings:
    """The hypothesis property suite: generated inputs run on the device."""

    examples: int = 25  # generated inputs per property (0 turns the suite off)
    time_budget_s: float = 30.0  # per item; hypothesis stops generating when it runs out
    batch: int = 3  # batch size for the batch-consistency property


@dataclass(frozen=True)
class PlanSettings:
    """How much an expensive (emulated) device does per suite: see harness.emulation_plan."""

    budget_s: float = 60.0  # inference time one suite may spend on such a device
    agreement_samples: int = 64  # at most: inputs the device answers to compare with the host
    confidence: float = 0.95  # of the agreement's interval, which decides device_top1_min
    # Where a gate (device_top1_min, parity_top1_min) needs more samples to be decided than
    # budget_s buys, the plan spends up to this many inference seconds on its new samples.
    max_budget_s: float = 300.0


@dataclass(frozen=True)
class LatencySettings:
    warmup: int = 20  # untimed runs first
    samples: int = 300  # timed runs wanted
    min_samples: int = 30  # fewer than this when the budget runs out: INCONCLUSIVE
    time_budget_s: float = 10.0  # per (model, device) latency item
    confidence: float = 0.95  # of the intervals that decide gates (and end sampling early)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    dataset: Path | None = None
    output: str | None = None
    task: str | None = None  # None: from y's dtype (integers: classification)
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    input_values: Mapping[str, Any] = field(default_factory=dict)
    gates: GateSpec = GateSpec()
    device_gates: Mapping[str, GateSpec] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # file problems: the model's items fail with these
    parity_with: str | None = None  # another model of this config to compare outputs with
    text: Path | None = None  # language models: the text perplexity is measured on
    prompts: tuple[Prompt, ...] = ()  # language models: the prompt set (from `prompts`)
    generate: GenerateSettings | None = None  # set for task = "generate" (defaults filled in)

    @property
    def relative_gates(self) -> tuple[str, ...]:
        """The relative gates set for any device: they need a baseline."""
        specs = [self.gates, *self.device_gates.values()]
        return tuple(k for k in RELATIVE_GATES if any(getattr(s, k) is not None for s in specs))

    def gates_for(self, device: str) -> GateSpec:
        override = self.device_gates.get(device)
        return self.gates if override is None else self.gates.overridden_by(override)


@dataclass(frozen=True)
class HarnessConfig:
    source: Path
    devices: tuple[str, ...] = ("host",)
    matrix: Path | None = None
    models: tuple[ModelSpec, ...] = ()
    latency: LatencySettings = LatencySettings()
    robustness: RobustnessSettings = RobustnessSettings()
    plan: PlanSettings = PlanSettings()
    timeout_s: float = 300.0  # per worker request
    seed: int = 0
    inconclusive: str = "fail"  # what an INCONCLUSIVE verdict does: fail | pass
    baseline_missing: str = "error"  # a model without a base under --baseline: error | report
    counting: bool = False  # count instructions per inference under QEMU (the instructions suite)
    profiles: Mapping[str, DeviceProfile] = field(default_factory=dict)
    history: Path | None = None  # SQLite history every session appends to; None: off

    @property
    def root(self) -> Path:
        return self.source.parent

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        known = ", ".join(m.name for m in self.models)
        raise ConfigError(f"{self.source}: no model named {name!r}; models: {known}")


_TOP_KEYS = [
    "devices",
    "matrix",
    "models",
    "latency",
    "robustness",
    "plan",
    "timeout_s",
    "seed",
    "inconclusive",
    "baseline_missing",
    "history",
    "counting",
]
_MODEL_KEYS = [
    "name",
    "path",
    "dataset",
    "output",
    "task",
    "input_shapes",
    "input_values",
    "gates",
    "devices",
    "parity_with",
    "text",
    "prompts",
    "generate",
]


def find_config(rootdir: Path) -> Path | None:
    """harness.toml in `rootdir`, else a pyproject.toml there with a [tool.harness] table."""
    candidate = rootdir / "harness.toml"
    if candidate.is_file():
        return candidate
    pyproject = rootdir / "pyproject.toml"
    if pyproject.is_file():
        try:
            if "harness" in tomllib.loads(pyproject.read_text()).get("tool", {}):
                return pyproject
        except tomllib.TOMLDecodeError:
            return pyproject  # let load_config report the syntax error with the file name
    return None


def search_config(start: Path, stop: Path | None = None) -> Path | None:
    """The config a run started in `start` uses: find_config in `start` and each folder above
    it, up to `stop` (pytest's rootdir) or the top of a git repository, whichever comes first."""
    for folder in (start, *start.parents):
        found = find_config(folder)
        if found is not None or folder == stop or (folder / ".git").exists():
            return found
    return None


def load_config(path: Path, profiles: Mapping[str, DeviceProfile] | None = None) -> HarnessConfig:
    """Parse the config at `path`, with the device profiles it can name (built-ins + matrix,
    or the `profiles` given). The path is kept as named, not resolved: a config that is a
    symbolic link is judged where the command named it (harness.baseline)."""
    path = Path(os.path.abspath(path))
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the harness config: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if path.name == "pyproject.toml":
        table = document.get("tool", {}).get("harness")
        if table is None:
            raise ConfigError(f"{path}: has no [tool.harness] table; add one or use harness.toml")
        prefix = "tool.harness."
    else:
        table, prefix = document, ""
    matrix = table.get("matrix", "device-matrix")
    expect_type(matrix, str, str(path), f"{prefix}matrix")
    if profiles is None:
        profiles = load_profiles((path.parent / matrix).resolve())
    return parse_config(table, path, prefix, profiles)


def _number(value: Any, where: str, key: str) -> float:
    """An int or float that is a finite number: TOML's `nan` and `inf` are floats, and every
    comparison with NaN is false, so a `nan` threshold would pass anything."""
    expect_type(value, (int, float), where, key)
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {key} = {value} must be a finite number")
    return float(value)


def _gates(table: Any, where: str, override: bool = False) -> GateSpec:
    """A gates table; an `override` (per device) sets only the keys it names."""
    expect_type(table, dict, where, "the gates table")
    check_keys(table, GATE_KEYS, where)
    values: dict[str, float] = {}
    for key, value in table.items():
        _number(value, where, key)
        if value < 0:
            raise ConfigError(f"{where}: {key} = {value} must not be negative")
        if key in FRACTION_GATES and value > 1:
            raise ConfigError(
                f"{where}: {key} = {value} is a fraction between 0 and 1 (0.95 means 95%)"
            )
        values[key] = float(value)
    unset = dict.fromkeys(GATE_KEYS) if override else {}
    return GateSpec(**(unset | values))


def _shapes(table: Any, where: str) -> dict[str, tuple[int, ...]]:
    expect_type(table, dict, where, "input_shapes")
    shapes = {}
    for name, dims in table.items():
        if not isinstance(dims, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims
        ):
            raise ConfigError(
                f"{where}: input_shapes.{name} = {dims!r} must be a list of positive integers, "
                "e.g. [1, 3, 224, 224]"
            )
        shapes[name] = tuple(dims)
    return shapes


def _model(
    table: Any, index: int, base: Path, where: str, known_devices: Collection[str] | None
) -> ModelSpec:
    here = f"{where}: {index + 1}. model"
    expect_type(table, dict, here, "each [[models]] entry")
    check_keys(table, _MODEL_KEYS, here)
    for key in ("name", "path"):
        if key not in table:
            raise ConfigError(f"{here}: missing key {key!r}")
    name = expect_type(table["name"], str, here, "name")
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"{here}: name {name!r} may hold letters, digits and _ . + - only (it goes into "
            "test ids like latency[NAME@rpi4])"
        )
    here = f"{where}: model {name!r}"
    problems = []
    path = (base / expect_type(table["path"], str, here, "path")).resolve()
    generative = table.get("task") == "generate"
    if generative:
        problem = language_model_problem(path)
        if problem is not None:
            problems.append(f"{problem} (path = {table['path']!r} in {where})")
    elif "generate" in table or "text" in table or "prompts" in table:
        raise ConfigError(
            f'{here}: text, prompts and generate are for language models; add task = "generate"'
        )
    elif path.suffix.lower() not in (".onnx", ".tflite"):
        raise ConfigError(f"{here}: path {table['path']!r} is not an .onnx or .tflite file")
    if not generative and not path.is_file():
        problems.append(f"model file {path} does not exist (path = {table['path']!r} in {where})")
    dataset = None
    if "dataset" in table:
        dataset = (base / expect_type(table["dataset"], str, here, "dataset")).resolve()
        if not dataset.is_file():
            problems.append(
                f"dataset {dataset} does not exist (dataset = {table['dataset']!r} in {where})"
            )
    task = table.get("task")
    if task is not None and task not in TASKS:
        raise ConfigError(f"{here}: task {task!r} is not one of {', '.join(TASKS)}")
    text, generate = None, None
    prompts: tuple[Prompt, ...] = ()
    if generative:
        generate = parse_generate(table.get("generate", {}), here)
        if "text" in table:
            text = (base / expect_type(table["text"], str, here, "text")).resolve()
            if not text.is_file():
                problems.append(f"text {text} does not exist (text = {table['text']!r} in {where})")
        if "prompts" in table:
            prompts_file = (base / expect_type(table["prompts"], str, here, "prompts")).resolve()
            if prompts_file.is_file():
                prompts = load_prompts(prompts_file)
            else:
                problems.append(
                    f"prompts {prompts_file} does not exist (prompts = {table['prompts']!r} in "
                    f"{where})"
                )
    values = table.get("input_values", {})
    expect_type(values, dict, here, "input_values")
    for key, value in values.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(
                f"{here}: input_values.{key} = {value!r} must be a finite number (a scalar input's "
                "value, or the value a state input is filled with)"
            )
    device_gates = {}
    devices_table = table.get("devices", {})
    expect_type(devices_table, dict, here, "devices (per-device gate overrides)")
    for device, gates in devices_table.items():
        if known_devices is not None and device not in known_devices:
            raise ConfigError(
                f"{here}: gate overrides for unknown device {device!r}; known devices: "
                f"{', '.join(sorted(known_devices))}"
            )
        device_gates[device] = _gates(gates, f"{here}, devices.{device}", override=True)
    return ModelSpec(
        name=name,
        path=path,
        dataset=dataset,
        output=None if "output" not in table else expect_type(table["output"], str, here, "output"),
        task=task,
        input_shapes=_shapes(table.get("input_shapes", {}), here),
        input_values=dict(values),
        gates=_gates(table.get("gates", {}), f"{here}, gates"),
        device_gates=device_gates,
        problems=tuple(problems),
        parity_with=None
        if "parity_with" not in table
        else expect_type(table["parity_with"], str, here, "parity_with"),
        text=text,
        prompts=prompts,
        generate=generate,
    )


def _settings(kind: Any, table: Any, where: str) -> Any:
    """A settings dataclass from a table of positive numbers, keys checked against its fields."""
    expect_type(table, dict, where, "this table")
    check_keys(table, [f.name for f in fields(kind)], where)
    for key, value in table.items():
        _number(value, where, key)
        if value < 0:
            raise ConfigError(f"{where}: {key} = {value} must not be negative")
    return kind(**table)


def _timeout(value: Any, where: str) -> float:
    if _number(value, where, "timeout_s") <= 0:
        raise ConfigError(f"{where}: timeout_s = {value} must be positive (seconds per request)")
    return float(value)


def parse_config(
    table: Mapping[str, Any],
    source: Path,
    prefix: str = "",
    profiles: Mapping[str, DeviceProfile] | None = None,
) -> HarnessConfig:
    where = str(source)
    known_devices = None if profiles is None else set(profiles)
    check_keys(table, _TOP_KEYS, where)
    devices = table.get("devices", ["host"])
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices) or not devices:
        raise ConfigError(f'{where}: {prefix}devices must be a list of device names, e.g. ["host"]')
    if known_devices is not None:
        for device in devices:
            if device != "all" and device not in known_devices:
                raise ConfigError(
                    f"{where}: {prefix}devices names unknown device {device!r}; known devices: "
                    f"{', '.join(sorted(known_devices))}"
                )
    models_table = table.get("models", [])
    if not isinstance(models_table, list) or not models_table:
        raise ConfigError(
            f"{where}: no models; add at least one [[{prefix}models]] table with name and path"
        )
    models = tuple(
        _model(m, i, source.parent, where, known_devices) for i, m in enumerate(models_table)
    )
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: model names must be unique; repeated: {', '.join(duplicates)}")
    latency_table = table.get("latency", {})
    expect_type(latency_table, dict, where, f"{prefix}latency")
    check_keys(latency_table, [f.name for f in fields(LatencySettings)], f"{where}: latency")
    for key, value in latency_table.items():
        _number(value, f"{where}: latency", key)
        if value < 0 or (key != "warmup" and value == 0):
            raise ConfigError(f"{where}: latency.{key} = {value} must be positive")
        if key == "confidence" and not 0.5 <= value < 1:
            raise ConfigError(
                f"{where}: latency.confidence = {value} must be in [0.5, 1), e.g. 0.95"
            )
    latency = LatencySettings(**latency_table)
    robustness = _settings(RobustnessSettings, table.get("robustness", {}), f"{where}: robustness")
    plan = _settings(PlanSettings, table.get("plan", {}), f"{where}: plan")
    if not 0.5 <= plan.confidence < 1:
        raise ConfigError(f"{where}: plan.confidence = {plan.confidence} must be in [0.5, 1)")
    for model in models:
        if model.parity_with is not None and (
            model.parity_with == model.name or model.parity_with not in names
        ):
            others = ", ".join(n for n in names if n != model.name) or "none"
            raise ConfigError(
                f"{where}: model {model.name!r}: parity_with = {model.parity_with!r} names no "
                f"other model of this config (others: {others})"
            )
    inconclusive = table.get("inconclusive", "fail")
    if inconclusive not in ("fail", "pass"):
        raise ConfigError(f'{where}: {prefix}inconclusive = {inconclusive!r}; use "fail" or "pass"')
    matrix = expect_type(table.get("matrix", "device-matrix"), str, where, f"{prefix}matrix")
    baseline_missing = table.get("baseline_missing", "error")
    if baseline_missing not in ("error", "report"):
        raise ConfigError(
            f'{where}: {prefix}baseline_missing = {baseline_missing!r}; use "error" (a model '
            'without a base fails) or "report" (its relative gates are reported as NO BASELINE)'
        )
    history = expect_type(table.get("history", ".harness/history.sqlite"), str, where, "history")
    counting = expect_type(table.get("counting", False), bool, where, "counting")
    return HarnessConfig(
        counting=counting,
        # not resolved: a link on the way is refused when the history is written (harness.links)
        history=Path(os.path.abspath(source.parent / history)) if history else None,
        baseline_missing=baseline_missing,
        inconclusive=inconclusive,
        source=source,
        profiles=dict(profiles if profiles is not None else load_profiles(None)),
        devices=tuple(devices),
        matrix=(source.parent / matrix).resolve(),
        models=models,
        latency=latency,
        robustness=robustness,
        plan=plan,
        timeout_s=_timeout(table.get("timeout_s", 300.0), where),
        seed=int(expect_type(table.get("seed", 0), int, where, "seed")),
    )
