"""Gate policy: a pull request must not loosen its own gates.

Under `--baseline` with a base checkout (a git ref or a folder), the base's config is compared
with this one. A tightened or added gate simply applies. A loosened or removed gate, or a
config setting that lets more through (`inconclusive = "pass"`, `baseline_missing = "report"`, a
lower latency confidence, a removed model), fails the `policy[...]` item, unless the session was
given `--allow-gate-changes` (the reusable workflow passes it only for a pull request carrying
the label its maintainers chose). Either way every change is listed in the item and the reports.

Pure: configs in, changes and a Verdict out.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from harness import catalogue
from harness.config import GateSpec, HarnessConfig, ModelSpec
from harness.results import FAIL, PASS, Check, Verdict

LOOSENED, TIGHTENED = "loosened", "tightened"


@dataclass(frozen=True)
class GateChange:
    scope: str  # "gates", "devices.rpi4" or "config"
    key: str
    before: object
    after: object
    kind: str  # loosened | tightened

    def __str__(self) -> str:
        where = "" if self.scope == "gates" else f"{self.scope}."
        return f"{where}{self.key} {_shown(self.before)} → {_shown(self.after)} ({self.kind})"


def _shown(value: object) -> str:
    return "unset" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _stricter_is_higher(key: str) -> bool:
    """`min` gates demand at least a value; `max` gates allow at most one (the catalogue)."""
    return catalogue.gate(key).bound == "min"


def _compare(scope: str, key: str, before: float | None, after: float | None) -> GateChange | None:
    if before == after:
        return None
    if before is None:
        return GateChange(scope, key, before, after, TIGHTENED)  # a new gate
    if after is None:
        return GateChange(scope, key, before, after, LOOSENED)  # a gate removed
    higher = after > before
    tighter = higher if _stricter_is_higher(key) else not higher
    return GateChange(scope, key, before, after, TIGHTENED if tighter else LOOSENED)


def _gate_changes(scope: str, before: GateSpec, after: GateSpec) -> list[GateChange]:
    found = (
        _compare(scope, f.name, getattr(before, f.name), getattr(after, f.name))
        for f in fields(GateSpec)
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
            for k in (f.name for f in fields(GateSpec))
            if getattr(spec, k) is not None
        }
        changes += [c for c in effective if c.key in overridden]
    return changes


def config_changes(before: HarnessConfig, after: HarnessConfig) -> list[GateChange]:
    """Settings that change what passes for every model, and models whose gates went away."""
    changes = []
    for key, lenient in (("inconclusive", "pass"), ("baseline_missing", "report")):
        old, new = getattr(before, key), getattr(after, key)
        if old != new:
            changes.append(
                GateChange("config", key, old, new, LOOSENED if new == lenient else TIGHTENED)
            )
    old_confidence, new_confidence = before.latency.confidence, after.latency.confidence
    if old_confidence != new_confidence:
        kind = LOOSENED if new_confidence < old_confidence else TIGHTENED
        changes.append(
            GateChange("config", "latency.confidence", old_confidence, new_confidence, kind)
        )
    names = {m.name for m in after.models}
    for model in before.models:
        if model.name not in names:
            changes.append(GateChange("config", f"models.{model.name}", "gated", None, LOOSENED))
    return changes


def changes_for(before: HarnessConfig, after: HarnessConfig, model: str) -> list[GateChange]:
    """Every change that bears on `model`'s gates: its own, and the config-wide ones."""
    old = next((m for m in before.models if m.name == model), None)
    new = after.model(model)
    own = (
        model_changes(old, new)
        if old is not None
        else _gate_changes("gates", GateSpec(), new.gates)
    )
    return own + config_changes(before, after)


def decide_policy(changes: list[GateChange], base_label: str, allowed: bool) -> Verdict:
    loosened = [c for c in changes if c.kind == LOOSENED]
    checks = tuple(
        Check(c.key, "gate_change", None, 0.0, not (c.kind == LOOSENED and not allowed), str(c))
        for c in changes
    )
    if loosened and not allowed:
        listed = "; ".join(str(c) for c in loosened)
        reason = (
            f"this change loosens gates against {base_label}: {listed} (a maintainer can accept "
            "it with --allow-gate-changes, which the reusable workflow passes for a pull request "
            "carrying the gate-change label)"
        )
        return Verdict(FAIL, checks, (reason,))
    if not changes:
        message = f"gates unchanged from {base_label}"
        return Verdict(PASS, (Check("policy", "gate_change", 0, 0, True, message),))
    return Verdict(PASS, checks)
