"""pytest items for the suites: `<suite>[<model>@<device>]`, collected from the harness config."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

from harness.backends.base import WorkerError, WorkerFailure
from harness.baseline import Baseline
from harness.boundary import POLICY_DEVICE, Boundary
from harness.config import HarnessConfig, ModelSpec
from harness.devices import DeviceProfile
from harness.gates import BaselineFacts, baseline_flags, judge
from harness.pairs import Pair, PairFailure, PairPool
from harness.progress import Progress
from harness.registry import Suite, suites_for
from harness.report.junit import junit_properties
from harness.results import (
    ERROR,
    PASS,
    SKIPPED,
    USER_PROPERTY,
    Check,
    Measurement,
    Record,
    Verdict,
    blocks,
    record,
)
from harness.worker.feeds import DataError


class GateFailure(Exception):
    """A failed gate or a failed measurement: shown as its message, without a traceback."""


class HarnessConfigFile(pytest.File):
    """The harness config file, collected into one item per (suite, model, device)."""

    config_data: HarnessConfig
    devices: list[DeviceProfile]
    pool: PairPool
    baseline: Baseline | None = None
    boundary: Boundary | None = None  # under a base with a config: what it decides

    def collect(self) -> Iterator[pytest.Item]:
        if self.boundary is not None:
            for model in self.config_data.models:
                yield PolicyItem.from_parent(self, name=f"policy[{model.name}]", model=model)
        for model in self.config_data.models:
            for profile in self.devices:
                for suite in suites_for(model, self.config_data):
                    yield HarnessItem.from_parent(
                        self,
                        name=f"{suite.name}[{model.name}@{profile.name}]",
                        suite=suite,
                        model=model,
                        profile=profile,
                    )


class _ConfigItem(pytest.Item):
    """What every item collected from the harness config shares: its file, how its record
    rides on the report, and how a gate's failure reads."""

    @property
    def harness_file(self) -> HarnessConfigFile:
        assert isinstance(self.parent, HarnessConfigFile)
        return self.parent

    def _attach(self, rec: Record) -> None:
        """Attach the result record to the report (xdist carries it to the controller)."""
        self.user_properties.extend(junit_properties(rec))
        self.user_properties.append((USER_PROPERTY, json.dumps(rec, default=str)))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, GateFailure):
            return f"{self.name}: {excinfo.value}"
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


class HarnessItem(_ConfigItem):
    def __init__(
        self, *, suite: Suite, model: ModelSpec, profile: DeviceProfile, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.model = model
        self.profile = profile
        self.pair_key = (model.name, profile.name)
        for keyword in (suite.name, model.name, profile.name, "harness"):
            self.keywords[keyword] = True
        # With `-n N --dist loadgroup`, one xdist worker gets all suites of a pair.
        self.add_marker(pytest.mark.xdist_group(f"{model.name}@{profile.name}"))

    def _publish(
        self,
        verdict: Verdict,
        measurement: Measurement | None,
        info: dict[str, Any],
        error: str | None = None,
        plan: dict[str, Any] | None = None,
    ) -> None:
        rec = record(
            self.nodeid,
            self.suite.name,
            self.model.name,
            self.profile.name,
            verdict,
            measurement,
            fidelity=self.profile.fidelity,
            worker=info,
            error=error,
            model_path=self.model.path,
            plan=plan,
        )
        self._attach(rec)

    def runtest(self) -> None:
        config = self.harness_file.config_data
        pair = self.harness_file.pool.get(self.model, self.profile)
        pair.progress = Progress(self.name, self._terminal_line())
        try:
            measurement = self.suite.measure(pair)
        except PairFailure as failure:
            self._fail_without_figures(str(failure), pair_info(pair), skip=failure.skip)
        except (WorkerError, WorkerFailure, DataError) as exc:
            self._fail_without_figures(str(exc), pair_info(pair))
        except Exception as exc:  # unforeseen (a bug): the item still gets its ERROR row
            message = f"{type(exc).__name__}: {exc}"
            self._publish(Verdict(ERROR, (), (message,)), None, pair_info(pair), error=message)
            raise
        baseline = pair.baseline
        problem = baseline.problem(self.suite.name)
        facts = BaselineFacts(baseline.label, baseline.missing, problem, baseline.other_machine)
        measurement.flags = baseline_flags(measurement.flags, facts)
        verdict = judge(self.suite.name, measurement, self.model.gates_for(self.profile.name),
                        self.profile.name, facts, config.baseline_missing,
                        config.source.name)  # fmt: skip
        plan = pair.plan.as_json() if pair.has_plan and not self.suite.static else None
        self._publish(verdict, measurement, pair_info(pair), plan=plan)
        if blocks(verdict.status, config.inconclusive):
            raise GateFailure("\n".join(verdict.reasons))

    def _terminal_line(self) -> Callable[[str], None] | None:
        """pytest's terminal, where this process has one (not an xdist worker)."""
        if hasattr(self.config, "workerinput"):
            return None
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        return None if reporter is None else reporter.write_line

    def _fail_without_figures(
        self, message: str, info: dict[str, Any], skip: bool = False
    ) -> NoReturn:
        status = SKIPPED if skip else ERROR
        verdict = Verdict(status, (), (message,))
        self._publish(verdict, None, info, error=message)
        if skip:
            pytest.skip(message)
        raise GateFailure(message)


class PolicyItem(_ConfigItem):
    """`policy[<model>]`: the model's gates against the base checkout's (harness.policy)."""

    DEVICE = POLICY_DEVICE  # the gates of every device

    def __init__(self, *, model: ModelSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        for keyword in ("policy", model.name, "harness"):
            self.keywords[keyword] = True

    def runtest(self) -> None:
        from harness.policy import decide_policy

        boundary = self.harness_file.boundary
        assert boundary is not None
        figures: dict[str, Any] = {"baseline": boundary.label}
        if boundary.problem:
            verdict = Verdict(ERROR, (), (boundary.problem,))
        elif boundary.absent:
            message = str(boundary.absent)
            verdict = Verdict(PASS, (Check("policy", "gate_change", 0, 0, True, message),))
        else:
            changes = boundary.changes_for(self.model.name)
            verdict = decide_policy(changes, boundary.label, boundary.allowed)
            figures |= {
                "changes": [str(c) for c in changes],
                "loosened": sum(c.blocks for c in changes),
                "tightened": sum(c.kind == "tightened" for c in changes),
                "allowed": boundary.allowed,
            }
        rec = record(
            self.nodeid,
            "policy",
            self.model.name,
            self.DEVICE,
            verdict,
            Measurement(figures, "measured"),
            fidelity="measured",
            model_path=self.model.path,
        )
        self._attach(rec)
        if blocks(verdict.status):
            raise GateFailure("\n".join(verdict.reasons))


def pair_info(pair: Pair) -> dict[str, Any]:
    """What the report says about the worker and target: versions, machine, limits."""
    info: dict[str, Any] = {}
    if pair.hello:
        info.update(
            machine=pair.hello.get("machine"),
            python=pair.hello.get("python"),
            versions=pair.hello.get("versions"),
        )
    if pair.loaded:
        info.update(
            runtime=pair.loaded.get("runtime"),
            runtime_version=pair.loaded.get("runtime_version"),
            provider=pair.loaded.get("provider"),
            input_shapes=pair.loaded.get("input_shapes"),
            batch_assumed=pair.loaded.get("batch_assumed"),
            output=pair.loaded.get("output"),
        )
    if pair.target is not None:
        info["limits"] = pair.target.limits
    if pair.baseline.label:
        info["baseline"] = pair.baseline.label
        if pair.baseline.base is not None:
            info["baseline_path"] = str(pair.baseline.base.path)
    return info
