"""The one verdict over a results document (one session's, or several device jobs' merged):
what `harness merge` and the reports say, and whether a device measured nothing at all."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.registry import BY_NAME, missing_items
from harness.results import ERROR, FAIL, INCONCLUSIVE, NO_GATE, PASS, SKIPPED, STATUSES, blocks

# pytest exit statuses: 0 ok, 1 tests failed, 5 no tests; anything else broke the session.
_SESSION_OK = (0, 1, 5)


@dataclass(frozen=True)
class Overall:
    """FAIL when any record failed or errored, a pytest session ended badly, or an expected
    device sent no results; INCONCLUSIVE when any record was (which fails too, unless told
    otherwise); PASS when at least one gate passed and nothing else went wrong; NO GATE when
    results came but no gate was set. No results at all is an ERROR: a check that measured
    nothing must not pass."""

    status: str  # PASS | FAIL | ERROR | INCONCLUSIVE | NO GATE
    counts: Mapping[str, int]
    problems: tuple[str, ...] = field(default=())  # why, beyond the records' own reasons

    def exit_code(self, inconclusive: str = "fail") -> int:
        """0 when the merge may go ahead, 1 when it is blocked (Status.blocks)."""
        return 1 if blocks(self.status, inconclusive) else 0

    def headline(self) -> str:
        shown = ", ".join(f"{n} {s.lower()}" for s in STATUSES if (n := self.counts.get(s)))
        return f"{self.status} ({shown or 'no results'})"


def unmeasured_devices(results: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Devices on which nothing was measured: every record that needed the device (not a
    static check of the model file) was skipped. Device -> the skip reason."""
    needed: dict[str, list[Mapping[str, Any]]] = {}
    for rec in results:
        known = BY_NAME.get(str(rec["suite"]))
        if known is None or not known.static:
            needed.setdefault(str(rec["device"]), []).append(rec)
    return {
        device: str(records[0].get("error") or "skipped")
        for device, records in needed.items()
        if all(r["verdict"]["status"] == SKIPPED for r in records)
    }


def unmeasured_problems(results: Iterable[Mapping[str, Any]]) -> list[str]:
    return [
        f"nothing was measured on {device}: {reason} (to accept that, pass --allow-unmeasured)"
        for device, reason in sorted(unmeasured_devices(results).items())
    ]


def overall(
    document: Mapping[str, Any],
    expect_devices: Sequence[str] = (),
    allow_unmeasured: bool = False,
    expect_items: Sequence[str] = (),
    expect_commit: str | None = None,
) -> Overall:
    """The one verdict over a (merged) results document. `expect_items`: items that must have
    reported (what the base requires, computed apart from the results: harness.boundary);
    `expect_commit`: the commit every session must have measured."""
    results = document.get("results", [])
    counts = Counter(str(r["verdict"]["status"]) for r in results)
    problems: list[str] = []
    sessions = document.get("sessions") or [document]
    for session in sessions:
        status = session.get("exitstatus")
        where = session.get("source") or "the pytest session"
        if status is not None and int(status) not in _SESSION_OK:
            problems.append(f"{where}: pytest ended with exit status {status} (session broken)")
    for session in sessions:
        missing = session.get("missing") or []
        if missing:
            where = session.get("source") or "the pytest session"
            problems.append(
                f"{where}: {len(missing)} items the judged config requires did not report: "
                + ", ".join(missing[:10])
                + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            )
    # A session that failed only because a device measured nothing explains its own exit 1.
    failing_records = counts[FAIL] + counts[ERROR] + counts[INCONCLUSIVE]
    failing_records += len(unmeasured_devices(results))
    if not failing_records and any(int(s.get("exitstatus") or 0) == 1 for s in sessions):
        problems.append("pytest reported failing tests outside the harness gates")
    seen = {r["device"] for r in results}
    for session in sessions:
        seen |= {d if isinstance(d, str) else d["name"] for d in session.get("devices") or []}
    missing = missing_items(expect_items, results, allow_unmeasured)
    if missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        problems.append(
            f"{len(missing)} items the base requires sent no results: "
            + ", ".join(missing[:10])
            + more
        )
    if expect_commit:
        for session in sessions:
            commit = (session.get("git") or {}).get("commit")
            if commit != expect_commit:
                where = session.get("source") or "a session"
                problems.append(f"{where} measured commit {commit}, not {expect_commit}")
    for device in expect_devices:
        if device not in seen:
            problems.append(f"no results for device {device} (its job failed before writing them?)")
    if not results:
        problems.append("no results: nothing was measured")
    elif not allow_unmeasured:
        problems += unmeasured_problems(results)
    if counts[ERROR] or (problems and not counts[FAIL]):
        status = ERROR
    elif counts[FAIL]:
        status = FAIL
    elif counts[INCONCLUSIVE]:
        status = INCONCLUSIVE
    elif counts[PASS]:
        status = PASS  # NO BASELINE records are reported, and block only through the config
    else:
        status = NO_GATE
    return Overall(status, dict(counts), tuple(problems))
