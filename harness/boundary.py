"""The trust boundary: under a base that has a config, the base decides what is measured.

A pull request is not trusted; its base commit is. Under `--baseline` with a base config (a git
ref, a base folder, or a results file that carries its config), the session measures what the
base's config says, on the base's datasets and with the base's device profiles; the change
supplies the model files, at the base's paths. What the change's own config proposes besides
(harness.policy) is listed by the `policy[...]` items and fails them unless it is accepted
(`--allow-gate-changes`, never from a file of the change):

- accepted: the change's config is measured as it stands;
- not accepted: the base's config, with the change's tightened gates applied and the models it
  adds (new, measured with the change's config entry).

Every item the judged config implies on the session's devices must report: `expected_items`
lists them, the plugin and `harness merge` fail a session or a merge that lacks one. See
docs/security.md for the threats this answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness.baseline import Baseline, file_digest
from harness.config import GATE_KEYS, GateSpec, HarnessConfig, ModelSpec
from harness.language_config import language_model_problem
from harness.links import link_on_path
from harness.policy import GateChange, config_changes, for_model, stricter
from harness.registry import item_key, suites_for

POLICY_DEVICE = "any"  # a policy item judges the gates of every device


@dataclass(frozen=True)
class Boundary:
    """What a session under a base measures, and what the change proposed against it."""

    config: HarnessConfig  # the judged config: what the session measures
    label: str  # the base, as reports name it
    changes: tuple[GateChange, ...] = ()
    allowed: bool = False
    problem: str | None = None  # the base's config does not load: an error
    absent: str | None = None  # the base has no config: every gate is new

    def changes_for(self, model: str) -> list[GateChange]:
        return for_model(list(self.changes), model)


def under_base(
    proposed: HarnessConfig, source: str | None, allowed: bool, devices: Sequence[str] = ()
) -> tuple[Baseline | None, Boundary | None]:
    """`--baseline SOURCE` for a session (or a command) on `proposed`: the baseline, and the
    boundary where the base has a config to decide with (a git ref, a folder, a results file).
    The caller closes the baseline (its private folder of the base's files)."""
    if not source:
        return None, None
    from harness.baseline import resolve_baseline

    baseline = resolve_baseline(source, proposed)
    if baseline.kind not in ("git", "folder", "results"):
        return baseline, None
    return baseline, judged(proposed, baseline, allowed, devices)


def judged(
    proposed: HarnessConfig, baseline: Baseline, allowed: bool, devices: Sequence[str] = ()
) -> Boundary:
    """The config a session under `baseline` measures, and the changes `proposed` makes."""
    base = baseline.config
    if base is None:
        return Boundary(proposed, baseline.label, allowed=allowed,
                        problem=baseline.config_problem, absent=baseline.config_absent)  # fmt: skip
    changes = config_changes(base, proposed, baseline.digest, file_digest, tuple(devices),
                             baseline.profiles)  # fmt: skip
    if baseline.config_link:
        changes.insert(0, GateChange("config", "file", "a file", baseline.config_link, "changed"))
    return Boundary(judged_config(base, proposed, allowed), baseline.label, tuple(changes),
                    allowed)  # fmt: skip


def judged_config(base: HarnessConfig, proposed: HarnessConfig, allowed: bool) -> HarnessConfig:
    """`proposed` when its changes are accepted; otherwise the base's config with the change's
    model files (at the base's paths), its stricter gates and its new models."""
    if allowed:
        return proposed
    theirs = {m.name: m for m in proposed.models}
    models = []
    for model in base.models:
        spec = _in_checkout(model, base, proposed)
        mine = theirs.get(model.name)
        if mine is not None:
            spec = replace(spec, gates=stricter(model.gates, mine.gates),
                           device_gates=_stricter_per_device(model, mine))  # fmt: skip
        models.append(spec)
    known = {m.name for m in base.models}
    models += [m for m in proposed.models if m.name not in known]
    return replace(
        base,
        source=proposed.source,
        models=tuple(models),
        history=proposed.history,
        inconclusive="fail" if "fail" in (base.inconclusive, proposed.inconclusive) else "pass",
        baseline_missing="error"
        if "error" in (base.baseline_missing, proposed.baseline_missing)
        else "report",
    )


def _stricter_per_device(base: ModelSpec, proposed: ModelSpec) -> dict[str, Any]:
    """Device overrides under which each device's gates are the stricter of both configs'."""
    overall = stricter(base.gates, proposed.gates)
    overrides = {}
    for device in sorted({*base.device_gates, *proposed.device_gates}):
        there = stricter(base.gates_for(device), proposed.gates_for(device))
        if there != overall:
            overrides[device] = GateSpec(
                **{
                    name: None if value == getattr(overall, name) else value
                    for name, value in ((n, getattr(there, n)) for n in GATE_KEYS)
                }
            )
    return overrides


def _in_checkout(model: ModelSpec, base: HarnessConfig, proposed: HarnessConfig) -> ModelSpec:
    """The base's model entry, measuring the change's file at the base's path."""
    relative = model.path.relative_to(base.root)
    path = proposed.root / relative
    problems = [p for p in model.problems if str(model.path) not in p]
    where = f"(the base's config names {relative.as_posix()}; the change supplies that file)"
    if link_on_path(path, proposed.root) is not None:
        problems.append(
            f"model file {path} is or lies under a symbolic link: under --baseline the change "
            f"supplies its model as a regular file {where}"
        )
    elif model.task == "generate" and language_model_problem(path) is not None:
        problems.append(f"{language_model_problem(path)} {where}")
    elif model.task != "generate" and not path.is_file():
        problems.append(f"model file {path} does not exist {where}")
    return replace(model, path=path, problems=tuple(problems))


def expected_items(config: HarnessConfig, devices: Iterable[str], policy: bool) -> list[str]:
    """Every item a session of `config` on `devices` must report (policy items under a base
    with a config)."""
    names = [item_key("policy", m.name, POLICY_DEVICE) for m in config.models] if policy else []
    names += [
        item_key(s.name, m.name, d)
        for d in devices
        for m in config.models
        for s in suites_for(m, config)
    ]
    return names
