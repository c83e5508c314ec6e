"""Gate decisions: pure functions from thresholds and figures to a Verdict. Nothing here measures.

Absolute millisecond gates apply to `measured` and `estimated` figures only: an emulated
millisecond is not a device millisecond. Relative gates and accuracy apply to every fidelity.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from harness import catalogue, stats
from harness.config import GateSpec
from harness.results import (
    ERROR,
    FAIL,
    INCONCLUSIVE,
    NO_BASELINE,
    NO_GATE,
    PASS,
    WARN,
    Check,
    Flags,
    Measurement,
    Verdict,
)

__all__ = [
    "ABSOLUTE_TIME_FIDELITIES",
    "FAIL",
    "INCONCLUSIVE",
    "NO_BASELINE",
    "NO_GATE",
    "PASS",
    "RELATIVE",
    "RULES",
    "WARN",
    "Check",
    "BaselineFacts",
    "Verdict",
    "baseline_flags",
    "decide",
    "judge",
]

ABSOLUTE_TIME_FIDELITIES = ("measured", "estimated")


@dataclass(frozen=True)
class Rule:
    gate: str
    suite: str
    figure: str
    label: str  # how the message names the figure
    unit: str
    worse: Callable[[float, float], bool]  # worse(value, threshold): the gate fails
    symbol: str  # shown between value and threshold when it fails
    absolute_time: bool = False
    digits: int = 1
    emulated_figure: str | None = None  # read instead under emulation (an estimated figure)
    against_host: bool = False  # device parity: not applicable on the host, the reference
    # A sampled figure decides on its interval (`<figure>_low`, `<figure>_high`): PASS when the
    # whole interval meets the gate, FAIL when none of it does, undecided between.
    interval: bool = False
    optional: bool = False  # a record without the figure is not gated (the host: no agreement)


def _rule(
    gate: str, *, figure: str | None = None, suite: str | None = None, **decision: Any
) -> Rule:
    """A rule for `gate`, its figure, comparison, label, unit and digits from the catalogue
    (`figure`/`suite` name another figure the same gate reads, e.g. accuracy's host agreement);
    `decision` holds how it decides (interval, the emulated figure, against the host...)."""
    entry = catalogue.gate(gate)
    shown = catalogue.FIGURES[figure or entry.figure]
    worse, symbol = (operator.lt, "<") if entry.bound == "min" else (operator.gt, ">")
    unit = f" {shown.unit}" if shown.unit else ""
    return Rule(gate, suite or entry.suite, shown.name, shown.title, unit, worse, symbol,
                digits=shown.digits, **decision)  # fmt: skip


# How an absolute gate decides beyond comparing its catalogue figure with the threshold: on an
# interval, on the timing model's estimate on an emulated board (absolute times: never on an
# emulated clock), against the host. A gate not named here needs nothing more than its
# catalogue entry.
DECIDES: Mapping[str, Mapping[str, Any]] = {
    # On an emulated board: the timing model's estimate, decided on its error band.
    "latency_p90_ms_max": {
        "absolute_time": True,
        "emulated_figure": "estimated_ms",
        "interval": True,
    },
    "memory_peak_mb_max": {"emulated_figure": "board_peak_mb"},
    "parity_top1_min": {"interval": True},
    "device_top1_min": {"against_host": True, "interval": True},
    "device_max_abs_error": {"against_host": True},
    "device_cosine_min": {"against_host": True},
    "ttft_p90_ms_max": {
        "absolute_time": True,
        "emulated_figure": "estimated_ttft_ms",
        "interval": True,
    },
    "decode_p90_ms_max": {
        "absolute_time": True,
        "emulated_figure": "estimated_decode_ms",
        "interval": True,
    },
    # Measured: decided on the interval of the median step (tokens_per_s_low/high, the suite's
    # stopping rule); emulated: on the timing model's band.
    "tokens_per_s_min": {
        "absolute_time": True,
        "emulated_figure": "estimated_tokens_per_s",
        "interval": True,
    },
    # vs parity_with, on intervals that resample the text's windows (harness.language_scores)
    "perplexity_ratio_max": {"interval": True},
    "token_agreement_min": {"interval": True},
    "kld_mean_max": {"interval": True},
    "kld_p99_max": {"interval": True},
}

RULES = (
    *(
        _rule(gate.name, **DECIDES.get(gate.name, {}))
        for gate in catalogue.GATES.values()
        if not gate.relative
    ),
    # device_top1_min also reads the board's agreement with the host where a suite scores the
    # model natively and the emulated board answers a sample (accuracy: harness.suites.accuracy;
    # text: harness.suites.textwork).
    *(
        _rule(
            "device_top1_min",
            figure="host_agreement",
            suite=suite,
            against_host=True,
            interval=True,
            optional=True,
        )
        for suite in ("accuracy", "perplexity", "answers")
    ),  # fmt: skip
)


def _context(device: str, fidelity: str, n: int | None) -> str:
    return f"({device}, {fidelity}" + (f", n={n})" if n is not None else ")")


@dataclass(frozen=True)
class BaselineFacts:
    """What `--baseline` says for one item (harness.baseline resolves it): the base's label,
    why there is no base for the model, why a stored base gives this suite nothing, and whether
    stored figures come from another machine."""

    label: str = ""  # empty: no --baseline
    missing: str | None = None
    problem: str | None = None
    other_machine: bool = False


def baseline_flags(flags: Flags, facts: BaselineFacts) -> Flags:
    """`flags` with what the baseline says, as records carry it."""
    found = Flags(**flags)
    if facts.label:
        found["baseline"] = facts.label
        if facts.problem:
            found["baseline_problem"] = facts.problem
    if facts.other_machine:
        found["baseline_other_machine"] = True
    if facts.missing:
        found["baseline_missing"] = facts.missing
    return found


def judge(
    suite: str,
    measurement: Measurement,
    gates: GateSpec,
    device: str,
    facts: BaselineFacts = BaselineFacts(),
    baseline_missing: str = "error",
    config_name: str = "the config",
) -> Verdict:
    """The one decision for an item: its gates on its measurement and its baseline. A model
    without a base whose suite has relative gates is an ERROR under `baseline_missing =
    "error"` (the default), NO BASELINE under "report"."""
    flags = baseline_flags(measurement.flags, facts)
    relative = [g for g, s in RELATIVE.items() if s == suite and getattr(gates, g) is not None]
    if facts.missing and relative and baseline_missing == "error":
        message = (
            f"no baseline for {', '.join(relative)}: {facts.missing} (to report such models "
            f'as NO BASELINE instead, set baseline_missing = "report" in {config_name})'
        )
        return Verdict(ERROR, (), (message,))
    return decide(suite, measurement.figures, gates, device, measurement.fidelity, flags)


def decide(
    suite: str,
    figures: Mapping[str, Any],
    gates: GateSpec,
    device: str,
    fidelity: str,
    flags: Flags | None = None,
) -> Verdict:
    """Apply every gate of `suite` that is set in `gates` to `figures` and `flags`."""
    flags = flags or Flags()
    checks = []
    straddling: list[str] = []
    n = figures.get("n")
    for rule in RULES:
        threshold = getattr(gates, rule.gate)
        if rule.suite != suite or threshold is None:
            continue
        if rule.against_host and flags.get("is_reference"):
            continue  # the host is the reference of device parity
        figure, label, where = rule.figure, rule.label, _context(device, fidelity, n)
        if figures.get(f"basis_{figure}"):  # what the figure rests on, where the suite says
            where = f"({device}: {figures[f'basis_{figure}']})"
        read_as = fidelity
        if fidelity == "emulated" and rule.emulated_figure in figures:
            figure, label = str(rule.emulated_figure), f"{rule.label} (board estimate)"
            read_as = "estimated"
            where = _context(device, "estimated", n)
            if "estimate_model" in figures:
                where = f"({device}, estimated: {figures['estimate_model']})"
        value = figures.get(figure)
        shown = f"{threshold:.{rule.digits}f}{rule.unit}"
        if figure.startswith("estimated_") and figures.get("estimate_not_validated"):
            # Outside the conditions its band was measured under (harness.timing: instruction
            # mix, threads, machine): an estimate without a band decides nothing.
            text = f"{value:.{rule.digits}f}{rule.unit}" if isinstance(value, float) else value
            message = (
                f"{label} {text} undecided against {shown} {where}: the estimate is "
                f"{figures['estimate_not_validated']}"
            )
            checks.append(Check(rule.gate, figure, value, threshold, None, message))
            straddling.append(message)
            continue
        if rule.absolute_time and read_as not in ABSOLUTE_TIME_FIDELITIES:
            why = figures.get("estimate_unavailable") or "relative gates still apply"
            bound = "≤" if rule.symbol == ">" else "≥"
            message = (
                f"{label} {bound} {shown} not applied: {fidelity} figures are not device "
                f"milliseconds ({why})"
            )
            checks.append(Check(rule.gate, figure, value, threshold, None, message))
            continue
        if value is None and rule.optional:
            continue
        if value is None and figures.get(f"{figure}_skipped"):  # the suite says why not
            bound = "≤" if rule.symbol == ">" else "≥"
            message = f"{label} {bound} {shown} not applied: {figures[f'{figure}_skipped']}"
            checks.append(Check(rule.gate, figure, None, threshold, None, message))
            continue
        if value is None:
            if flags.get("failure"):
                continue  # the failure (e.g. OOM-killed) is the reason; no second one
            message = f"{label}: no figure to compare with {shown} {where}"
            checks.append(Check(rule.gate, figure, None, threshold, False, message))
            continue
        text = f"{value:.{rule.digits}f}{rule.unit}"
        if rule.interval and f"{figure}_low" in figures:
            check = _on_interval(rule, figure, figures, value, threshold, text, shown, where)
            checks.append(check)
            if check.passed is None:
                straddling.append(check.message)
            continue
        failed = rule.worse(value, threshold)
        relation = rule.symbol if failed else {">": "≤", "<": "≥"}[rule.symbol]
        message = f"{label} {text} {relation} {shown} {where}"
        checks.append(Check(rule.gate, figure, value, threshold, not failed, message))
    relative = _relative_checks(suite, figures, flags, gates, device, fidelity)
    checks.extend(relative)
    # A comparison with a figure but no decision (an interval across the gate, an estimate
    # outside its validated conditions) is undecided; one without a figure was not applied.
    straddling.extend(c.message for c in relative if c.passed is None and c.value is not None)
    if suite in ("robustness", "prompt_robustness") and not flags.get("failure"):
        checks.append(_properties_held(figures, device, fidelity))
    if suite == "operators" and not flags.get("failure"):
        runtime = f"{figures.get('runtime')} {figures.get('runtime_version')}"
        if figures.get("warnings"):  # the tables cannot tell: say so, never "supported"
            unknown = "; ".join(str(w) for w in figures["warnings"])
            return Verdict(
                WARN, (), (f"operator support unknown on {runtime} ({device}): {unknown}",)
            )
        message = f"every operator is supported by {runtime} ({device})"
        checks.append(Check("operators", "errors", 0, 0, True, message))
    checks = [_finite(c, device, fidelity) for c in checks]
    failures = [c.message for c in checks if c.passed is False]
    if any(_baseline_error(c) for c in checks):
        return Verdict(ERROR, tuple(checks), tuple(failures))
    if flags.get("failure"):  # e.g. OOM-killed: a failing memory figure, not a crash
        failures.insert(0, str(flags["failure"]))
    if failures:
        return Verdict(FAIL, tuple(checks), tuple(failures))
    if flags.get("inconclusive"):
        return Verdict(INCONCLUSIVE, tuple(checks), (str(flags["inconclusive"]),))
    if straddling:  # a sampled figure whose interval straddles its gate: more samples decide
        return Verdict(INCONCLUSIVE, tuple(checks), tuple(straddling))
    if flags.get("baseline_missing") and any(c.gate in RELATIVE for c in checks):
        return Verdict(NO_BASELINE, tuple(checks), (f"no baseline: {flags['baseline_missing']}",))
    if any(c.passed for c in checks):
        return Verdict(PASS, tuple(checks))
    return Verdict(NO_GATE, tuple(checks))


def _on_interval(
    rule: Rule,
    figure: str,
    figures: Mapping[str, Any],
    value: float,
    threshold: float,
    text: str,
    shown: str,
    where: str,
) -> Check:
    """A gate on an uncertain figure (a sample's agreement, an estimate with its error band):
    PASS when the whole interval meets the gate, FAIL when none of it does, else undecided."""
    low, high = figures[f"{figure}_low"], figures[f"{figure}_high"]
    bounds = f"[{low:.{rule.digits}f}, {high:.{rule.digits}f}]"
    n = figures.get("agreement_n") if rule.symbol == "<" else None
    sampled = f" on {n} samples" if n is not None else ""
    meets, misses = (low >= threshold, high < threshold)
    if rule.symbol == ">":  # a most-allowed value
        meets, misses = (high <= threshold, low > threshold)
    passed: bool | None = True if meets else False if misses else None
    if passed is None:
        relation = "undecided against"
    else:
        relation = {">": "≤", "<": "≥"}[rule.symbol] if passed else rule.symbol
    label = rule.label + (" (board estimate)" if figure == rule.emulated_figure else "")
    message = f"{label} {text} {bounds}{sampled} {relation} {shown} {where}"
    confidence = figures.get("agreement_confidence")
    if passed is None and n is not None and confidence is not None:
        # A sample's interval narrows with more samples (an estimate's band does not).
        needed = stats.samples_needed_for_agreement(threshold, confidence)
        message += (
            f"; at {confidence:.0%}, about {needed} samples decide it (raise "
            "plan.agreement_samples and plan.budget_s)"
        )
    return Check(rule.gate, figure, value, threshold, passed, message)


def _finite(check: Check, device: str, fidelity: str) -> Check:
    """A NaN or infinite figure fails its check: every comparison with NaN is false, so without
    this a NaN would pass `value > threshold` gates."""
    value = check.value
    if value is None or isinstance(value, bool) or math.isfinite(value):
        return check
    message = (
        f"{check.gate}: {check.figure} is {value} ({device}, {fidelity}): not a finite number, "
        "so it cannot meet the gate"
    )
    return replace(check, passed=False, message=message)


def _baseline_error(check: Check) -> bool:
    """A relative gate under a baseline that gave nothing to compare with."""
    return check.gate in RELATIVE and check.value is None and check.passed is False


def _properties_held(figures: Mapping[str, Any], device: str, fidelity: str) -> Check:
    """The property suite is its own gate: every property held on every generated example."""
    examples = int(figures.get("examples", 0))
    held = examples > 0
    message = (
        f"properties held on {examples} generated inputs ({device}, {fidelity})"
        if held
        else f"no generated input ran within the time budget ({device}, {fidelity})"
    )
    return Check("properties", "examples", examples, 1, held, message)


RELATIVE = {name: catalogue.gate(name).suite for name in catalogue.gates_of(relative=True)}


def _relative_checks(
    suite: str,
    figures: Mapping[str, Any],
    flags: Flags,
    gates: GateSpec,
    device: str,
    fidelity: str,
) -> list[Check]:
    """Gates against the baseline: accuracy drop, latency ratio (with its CI), memory growth."""
    checks: list[Check] = []
    for gate, gate_suite in RELATIVE.items():
        threshold = getattr(gates, gate)
        if gate_suite != suite or threshold is None:
            continue
        if gate == "accuracy_max_drop":
            checks.append(_accuracy_drop(figures, flags, threshold, device, fidelity))
        elif gate == "latency_max_regression":
            checks.append(_latency_ratio(figures, flags, threshold, device, fidelity))
        elif gate == "instructions_max_regression":
            checks.append(_instructions_ratio(figures, flags, threshold, device))
        elif gate == "perplexity_max_growth":
            checks.append(_perplexity_growth(figures, flags, threshold, device, fidelity))
        elif gate == "decode_max_regression":
            checks.append(
                _latency_ratio(figures, flags, threshold, device, fidelity, gate, "decode")
            )
        else:
            checks.append(_memory_growth(figures, flags, threshold, device, fidelity))
    if flags.get("baseline_other_machine"):
        flag = " [baseline measured on another machine: figures may not compare]"
        checks = [replace(c, message=c.message + flag) for c in checks]
    return checks


def _not_applied(gate: str, figure: str, threshold: float, label: str, flags: Flags) -> Check:
    """A relative gate without its comparison. Without --baseline, or for a model the baseline
    does not have, it is not applied (the items say what that means); under a baseline that
    should have given the figure, it is an error, never a silent pass."""
    if flags.get("inconclusive"):  # too few samples to compare: that is the finding
        return Check(gate, figure, None, threshold, None, f"{label}: {flags['inconclusive']}")
    if flags.get("baseline_missing") or not flags.get("baseline"):
        why = flags.get("baseline_missing") or "no --baseline given"
        return Check(gate, figure, None, threshold, None, f"{label} not applied: {why}")
    problem = flags.get("baseline_problem") or "the comparison produced no figure"
    message = f"{gate}: no {figure} against the baseline {flags['baseline']}: {problem}"
    return Check(gate, figure, None, threshold, False, message)


def _accuracy_drop(
    figures: Mapping[str, Any], flags: Flags, threshold: float, device: str, fidelity: str
) -> Check:
    gate, label = "accuracy_max_drop", f"accuracy drop ≤ {threshold:.4f}"
    drop = figures.get("accuracy_drop")
    if drop is None:
        return _not_applied(gate, "accuracy_drop", threshold, label, flags)
    failed = drop > threshold
    change = f"({figures['baseline_accuracy']:.4f} → {figures['accuracy']:.4f})"
    message = (
        f"accuracy drop {drop:.4f} {'>' if failed else '≤'} {threshold:.4f} {change} "
        f"{_context(device, fidelity, figures.get('n'))}"
    )
    return Check(gate, "accuracy_drop", drop, threshold, not failed, message)


def _latency_ratio(
    figures: Mapping[str, Any],
    flags: Flags,
    threshold: float,
    device: str,
    fidelity: str,
    gate: str = "latency_max_regression",
    what: str = "latency",
) -> Check:
    label = f"{what} regression ≤ {threshold:.0%}"
    ratio = figures.get("ratio")
    if ratio is None and figures.get("estimate_unavailable") and fidelity == "emulated":
        # An emulated board's regression is decided on the timing model only (never on the
        # emulated wall clock); without counting here the gate cannot be applied.
        why = figures["estimate_unavailable"]
        return Check(gate, "ratio", None, threshold, None, f"{label} not applied: {why}")
    if ratio is None:
        return _not_applied(gate, "ratio", threshold, label, flags)
    if figures.get("ratio_basis") == "estimated":
        return _estimated_ratio(figures, threshold, device, gate, what)
    if figures.get("ratio_basis") == "identical":
        message = (
            f"{what} +0.0% ≤ {threshold:.0%}: the model is the base's, byte for byte, with the "
            f"same inputs ({device}: by identity, nothing to measure)"
        )
        return Check(gate, "ratio", 1.0, threshold, True, message)
    low, high = figures["ratio_low"], figures["ratio_high"]
    paired = figures.get("paired")
    n = f"paired n={figures.get('rounds')}" if paired else f"unpaired n={figures.get('n')}"
    shown = f"{what} {ratio - 1:+.1%} [{low - 1:+.1%}, {high - 1:+.1%}]"
    where = f"({device}, {fidelity}, {n})"
    limit = 1.0 + threshold
    if low > limit:
        return Check(gate, "ratio", ratio, threshold, False, f"{shown} > {threshold:.0%} {where}")
    if high <= limit:
        return Check(gate, "ratio", ratio, threshold, True, f"{shown} ≤ {threshold:.0%} {where}")
    return Check(
        gate, "ratio", ratio, threshold, None, f"{shown} undecided against {threshold:.0%} {where}"
    )


def _estimated_ratio(
    figures: Mapping[str, Any], threshold: float, device: str, gate: str, what: str
) -> Check:
    """The ratio of the timing model's estimates of new and base on an emulated board: counted,
    so the same on every run, decided by itself; the emulated wall clock's ratio is a note."""
    ratio = float(figures["ratio"])
    if figures.get("estimate_not_validated"):
        # Either estimate lies outside the conditions the timing model was validated under
        # (harness.timing: instruction mix, threads, machine): their ratio decides nothing.
        message = (
            f"{what} {ratio - 1:+.1%} undecided against {threshold:.0%} ({device}, estimated): "
            f"the estimate is {figures['estimate_not_validated']}"
        )
        return Check(gate, "ratio", ratio, threshold, None, message)
    failed = ratio - 1 > threshold
    key = "estimated_ms" if what == "latency" else f"estimated_{what}_ms"  # generation: decode
    shown = (
        f"{what} {ratio - 1:+.1%} {'>' if failed else '≤'} {threshold:.0%} "
        f"({figures['baseline_' + key]:.4g} → {figures[key]:.4g} ms) "
        f"({device}, estimated: timing model on counted instructions, the same every run)"
    )
    if figures.get("emulated_ratio") is not None:
        shown += (
            f"; note: emulated wall clock {figures['emulated_ratio'] - 1:+.1%} "
            f"[{figures['emulated_ratio_low'] - 1:+.1%}, "
            f"{figures['emulated_ratio_high'] - 1:+.1%}], not a gate"
        )
    return Check(gate, "ratio", ratio, threshold, not failed, shown)


def _instructions_ratio(
    figures: Mapping[str, Any], flags: Flags, threshold: float, device: str
) -> Check:
    """Counts are deterministic: the ratio itself decides, no interval needed."""
    gate, label = "instructions_max_regression", f"instructions regression ≤ {threshold:.2%}"
    ratio = figures.get("instructions_ratio")
    if ratio is None:
        return _not_applied(gate, "instructions_ratio", threshold, label, flags)
    failed = ratio - 1 > threshold
    change = (
        f"({figures['baseline_instructions_per_inference']:.1f} → "
        f"{figures['instructions_per_inference']:.1f} per inference)"
    )
    message = (
        f"instructions {ratio - 1:+.2%} {'>' if failed else '≤'} {threshold:.2%} {change} "
        f"({device}, counted)"
    )
    return Check(gate, "instructions_ratio", ratio, threshold, not failed, message)


def _growth(
    gate: str,
    figure: str,
    what: str,
    change: str,
    figures: Mapping[str, Any],
    flags: Flags,
    threshold: float,
    where: str,
) -> Check:
    """A growth against the base that decides by itself (memory share, perplexity): no
    interval, the figure is the same on every run of the same model."""
    growth = figures.get(figure)
    if growth is None:
        label = f"{figure.replace('_', ' ')} ≤ {threshold:.0%}"
        return _not_applied(gate, figure, threshold, label, flags)
    failed = growth > threshold
    relation = ">" if failed else "≤"
    message = f"{what} {growth:+.1%} {relation} {threshold:.0%} {change}{where}"
    return Check(gate, figure, growth, threshold, not failed, message)


def _before_after(figures: Mapping[str, Any], figure: str, digits: int, unit: str = "") -> str:
    """`(50.0 → 55.0 MB) ` from `baseline_<figure>` and `<figure>`, or nothing without them."""
    before, after = figures.get(f"baseline_{figure}"), figures.get(figure)
    if before is None or after is None:
        return ""
    return f"({before:.{digits}f} → {after:.{digits}f}{unit}) "


def _memory_growth(
    figures: Mapping[str, Any], flags: Flags, threshold: float, device: str, fidelity: str
) -> Check:
    change = _before_after(figures, "model_share_mb", 1, " MB")
    return _growth("memory_max_growth", "memory_growth", "memory (model share)", change,
                   figures, flags, threshold, f"({device}, {fidelity})")  # fmt: skip


def _perplexity_growth(
    figures: Mapping[str, Any], flags: Flags, threshold: float, device: str, fidelity: str
) -> Check:
    change = _before_after(figures, "perplexity", 3)
    return _growth("perplexity_max_growth", "perplexity_growth", "perplexity", change,
                   figures, flags, threshold, f"({device}, {fidelity})")  # fmt: skip
