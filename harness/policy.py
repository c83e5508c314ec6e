"""Gate policy: what a change proposes against the base's config, and whether it may.

Under `--baseline` with a base config (a git ref, a base folder, or a results file that carries
the config it was made with), the base decides what is measured: docs/security.md. Every
difference this change's config proposes is listed, key by key:

- a gate set stricter, or a new gate: `tightened`, applied as written;
- a gate set looser or removed, a model removed, `inconclusive = "pass"`, `baseline_missing =
  "report"`: `loosened`;
- anything else that changes what is measured, how, on what data or on which device (a dataset's
  content, input shapes, latency samples, robustness examples, the seed, a device profile...):
  `changed`, since the harness cannot say which way it moves a verdict;
- a model the base does not have: `new`, measured with this change's config.

A loosened or changed key fails the `policy[...]` item unless the session was given
`--allow-gate-changes` (the reusable workflow passes it only for a pull request carrying the label
its maintainers chose); either way every change is listed in the item and the reports.

Pure: configs and a way to digest files in, changes and a Verdict out. Files are compared by
content (`digest`), paths relative to each config's folder, so a base extracted elsewhere
compares with the checkout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from harness import catalogue
from harness.config import GateSpec, HarnessConfig, ModelSpec
from harness.devices import DeviceProfile
from harness.results import FAIL, PASS, Check, Verdict

LOOSENED, TIGHTENED, CHANGED, NEW = "loosened", "tightened", "changed", "new"
BLOCKING = (LOOSENED, CHANGED)  # kinds that fail policy unless accepted

Digest = Callable[[Path], "str | None"]  # a file's content hash; None: no such file

# Fields that do not change what is measured or how it is judged.
_UNJUDGED_CONFIG = {
    "source": "where the config is: compared by what it says",
    "matrix": "where profiles are read from: the profiles themselves are compared",
    "profiles": "compared for the devices in use (_profile_changes)",
    "models": "compared model by model",
    "history": "where this machine keeps its history: no verdict reads it",
}
_UNJUDGED_MODEL = {
    "name": "the key models are matched by",
    "gates": "compared gate by gate",
    "device_gates": "compared gate by gate, as they come out on each device",
    "problems": "what loading found wrong with the files",
}
_UNJUDGED_PROFILE = {"name": "the key profiles are matched by", "source": "where it was read"}


@dataclass(frozen=True)
class GateChange:
    scope: str  # "gates", "devices.rpi4", "config", "models.digits", "profiles.rpi4"
    key: str
    before: object
    after: object
    kind: str  # loosened | tightened | changed | new
    model: str | None = None  # the model it bears on; None: every model

    def __str__(self) -> str:
        where = "" if self.scope == "gates" else f"{self.scope}."
        if self.kind == NEW:
            return f"{where}{self.key}: {self.after} (new)"
        return f"{where}{self.key} {_shown(self.before)} → {_shown(self.after)} ({self.kind})"

    @property
    def blocks(self) -> bool:
        return self.kind in BLOCKING


def _shown(value: object) -> str:
    return "unset" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _compare(scope: str, key: str, before: float | None, after: float | None) -> GateChange | None:
    if before == after:
        return None
    if before is None:
        return GateChange(scope, key, before, after, TIGHTENED)  # a new gate
    if after is None:
        return GateChange(scope, key, before, after, LOOSENED)  # a gate removed
    kind = TIGHTENED if catalogue.gate(key).tightened(before, after) else LOOSENED
    return GateChange(scope, key, before, after, kind)


def _gate_changes(scope: str, before: GateSpec, after: GateSpec) -> list[GateChange]:
    found = (
        _compare(scope, name, getattr(before, name), getattr(after, name))
        for name in catalogue.GATES
    )
    return [change for change in found if change is not None]


def model_changes(before: ModelSpec, after: ModelSpec) -> list[GateChange]:
    """Changes of one model's gates: for every device, and per-device overrides as they come
    out on that device (a device override that undoes a tightened global gate loosens it)."""
    changes = _gate_changes("gates", before.gates, after.gates)
    for device in sorted({*before.device_gates, *after.device_gates}):
        scope = f"devices.{device}"
        effective = _gate_changes(scope, before.gates_for(device), after.gates_for(device))
        overridden = {
            k
            for spec in (before.device_gates.get(device), after.device_gates.get(device))
            if spec is not None
            for k in catalogue.GATES
            if getattr(spec, k) is not None
        }
        changes += [c for c in effective if c.key in overridden]
    return [GateChange(c.scope, c.key, c.before, c.after, c.kind, after.name) for c in changes]


def stricter(before: GateSpec, after: GateSpec) -> GateSpec:
    """Each gate at the stricter of the two thresholds (a gate set in either is set)."""
    values: dict[str, float | None] = {}
    for name in catalogue.GATES:
        old, new = getattr(before, name), getattr(after, name)
        if old is None or new is None:
            values[name] = new if old is None else old
        else:
            values[name] = new if catalogue.gate(name).tightened(old, new) else old
    return GateSpec(**values)


def _value(value: Any, root: Path, digest: Digest | None) -> Any:
    """A setting as compared: a file by its path under the config's folder and (with a
    `digest`) its content, a dataclass or mapping by its values."""
    if isinstance(value, Path):
        try:
            where = value.relative_to(root).as_posix()
        except ValueError:
            where = str(value)
        if digest is None:
            return where
        content = digest(value)
        return f"{where} ({content[:12]})" if content else f"{where} (absent)"
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _value(getattr(value, f.name), root, digest) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _value(v, root, digest) for k, v in sorted(value.items())}
    if isinstance(value, (tuple, list)):
        return [_value(v, root, digest) for v in value]
    return value


def _differences(
    scope: str, before: Mapping[str, Any], after: Mapping[str, Any], model: str | None = None
) -> Iterator[GateChange]:
    """CHANGED for every key whose value differs; nested settings key by key."""
    for key in sorted({*before, *after}):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            yield from _differences(f"{scope}.{key}", old, new, model)
        else:
            yield GateChange(scope, key, _brief(old), _brief(new), CHANGED, model)


def _brief(value: Any) -> Any:
    """A compared value as a change shows it: long lists (a prompt set) by their length."""
    if isinstance(value, list) and len(str(value)) > 80:
        return f"{len(value)} entries"
    return value


def _model_settings(spec: ModelSpec, root: Path, digest: Digest) -> dict[str, Any]:
    """A model's settings as compared. Its file is compared by where it is, not by content:
    the change supplies models."""
    settings = {
        f.name: _value(getattr(spec, f.name), root, digest)
        for f in fields(ModelSpec)
        if f.name not in _UNJUDGED_MODEL
    }
    settings["path"] = _value(spec.path, root, None)
    return settings


def _ordered_setting(key: str, old: str, new: str, lenient: str) -> GateChange:
    return GateChange("config", key, old, new, LOOSENED if new == lenient else TIGHTENED)


def profile_identity(profile: DeviceProfile, digest: Digest) -> dict[str, Any]:
    """What a device profile says, as compared (files by content)."""
    root = profile.source.parent if profile.source is not None else Path("/")
    return {
        f.name: _value(getattr(profile, f.name), root, digest)
        for f in fields(DeviceProfile)
        if f.name not in _UNJUDGED_PROFILE
    }


def config_changes(
    before: HarnessConfig,
    after: HarnessConfig,
    digest_before: Digest,
    digest_after: Digest,
    devices: tuple[str, ...] = (),
    profiles_before: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[GateChange]:
    """Every difference `after` proposes against `before` (module docstring): models' gates
    and settings, config-wide settings, and the profiles of `devices` (the session's) and of
    both configs' `devices`. `profiles_before` gives the base's profiles as compared, where
    they are no longer files (a stored results document)."""
    changes: list[GateChange] = []
    old_models = {m.name: m for m in before.models}
    for model in after.models:
        old = old_models.get(model.name)
        if old is None:
            changes.append(
                GateChange(
                    "config",
                    f"models.{model.name}",
                    None,
                    "measured with this change's config",
                    NEW,
                    model.name,
                )  # fmt: skip
            )
            continue
        changes += model_changes(old, model)
        changes += _differences(
            f"models.{model.name}",
            _model_settings(old, before.root, digest_before),
            _model_settings(model, after.root, digest_after),
            model.name,
        )
    names = {m.name for m in after.models}
    changes += [
        GateChange("config", f"models.{m.name}", "gated", None, LOOSENED, m.name)
        for m in before.models
        if m.name not in names
    ]
    for key, lenient in (("inconclusive", "pass"), ("baseline_missing", "report")):
        old_value, new_value = getattr(before, key), getattr(after, key)
        if old_value != new_value:
            changes.append(_ordered_setting(key, old_value, new_value, lenient))
    ordered = {"inconclusive", "baseline_missing"}
    settings = [
        f.name
        for f in fields(HarnessConfig)
        if f.name not in _UNJUDGED_CONFIG and f.name not in ordered
    ]
    changes += _differences(
        "config",
        {k: _value(getattr(before, k), before.root, digest_before) for k in settings},
        {k: _value(getattr(after, k), after.root, digest_after) for k in settings},
    )
    changes += _profile_changes(before, after, digest_before, digest_after,
                                devices, profiles_before)  # fmt: skip
    return changes


def _profile_changes(
    before: HarnessConfig,
    after: HarnessConfig,
    digest_before: Digest,
    digest_after: Digest,
    devices: tuple[str, ...],
    profiles_before: Mapping[str, Mapping[str, Any]] | None,
) -> list[GateChange]:
    used = sorted({*devices, *before.devices, *after.devices} - {"all"})
    changes: list[GateChange] = []
    for name in used:
        if profiles_before is not None:
            old: Mapping[str, Any] | None = profiles_before.get(name)
        else:
            profile = before.profiles.get(name)
            old = profile_identity(profile, digest_before) if profile is not None else None
        current = after.profiles.get(name)
        new = profile_identity(current, digest_after) if current is not None else None
        if old is None or new is None:
            if old != new:
                was, now = ("defined", None) if new is None else (None, "defined")
                changes.append(GateChange("profiles", name, was, now, CHANGED))
            continue
        changes += _differences(f"profiles.{name}", dict(old), new)
    return changes


def for_model(changes: list[GateChange], model: str) -> list[GateChange]:
    """The changes that bear on `model`: its own, and those that bear on every model."""
    return [c for c in changes if c.model in (None, model)]


def decide_policy(changes: list[GateChange], base_label: str, allowed: bool) -> Verdict:
    blocking = [c for c in changes if c.blocks]
    checks = tuple(
        Check(c.key, "gate_change", None, 0.0, not (c.blocks and not allowed), str(c))
        for c in changes
    )
    if blocking and not allowed:
        listed = "; ".join(str(c) for c in blocking)
        reason = (
            f"this change loosens gates or changes what is measured against {base_label}: "
            f"{listed} (the base's config and data were measured; a maintainer can accept the "
            "change with --allow-gate-changes, which the reusable workflow passes for a pull "
            "request carrying the gate-change label)"
        )
        return Verdict(FAIL, checks, (reason,))
    if not changes:
        message = f"gates unchanged from {base_label}"
        return Verdict(PASS, (Check("policy", "gate_change", 0, 0, True, message),))
    return Verdict(PASS, checks)
