"""The HTML report: one self-contained file (inline CSS, plots as base64 PNG, no scripts).

Plots, drawn with matplotlib's Agg canvas (no display, no pyplot state): latency distributions per
device from the raw samples, base vs new where a comparison left the base model's samples,
per-class accuracy, memory, and trends from the history store with the level changes marked. Axes
say the fidelity: an emulated time is labelled as QEMU wall-clock, never as device time.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from harness.registry import headline_figures
from harness.report import markdown
from harness.store import Trend
from harness.verdict import Overall, overall

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_PLOTS_PER_SECTION = 24
STATUS_CLASS = {"PASS": "pass", "FAIL": "fail", "ERROR": "fail", "INCONCLUSIVE": "warn"}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#1f2328;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:600}
.warn{color:#9a6700;font-weight:600}.note{color:#57606a}
figure{display:inline-block;margin:.6em 1em .6em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #d0d7de}figcaption{color:#57606a;font-size:12px}
"""


@dataclass(frozen=True)
class Plot:
    title: str
    caption: str
    png: bytes


def _figure(width: float = 6.4, height: float = 3.6) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


def time_axis(fidelity: str) -> str:
    """The axis label of a time: what kind of millisecond it is."""
    if fidelity == "emulated":
        return "QEMU wall-clock ms per inference (emulated, not device time)"
    if fidelity == "estimated":
        return "estimated device ms per inference (from counted instructions)"
    return f"ms per inference ({fidelity})"


def _by_device(results: Sequence[Mapping[str, Any]], suite: str) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for record in results:
        if record["suite"] == suite:
            grouped.setdefault(record["device"], []).append(record)
    return grouped


def latency_plots(results: Sequence[Mapping[str, Any]]) -> list[Plot]:
    """One box plot per device: every model's latency distribution from its raw samples."""
    plots = []
    for device, records in sorted(_by_device(results, "latency").items()):
        data = [
            (r["model"], [s / 1e6 for s in r["raw"]["samples_ns"]], r["fidelity"])
            for r in sorted(records, key=lambda r: str(r["model"]))
            if (r.get("raw") or {}).get("samples_ns")
        ]
        if not data:
            continue
        fidelity = data[0][2]
        figure, axes = _figure(6.4, 1.2 + 0.6 * len(data))
        axes.boxplot([d[1] for d in data], orientation="horizontal", showfliers=False)
        axes.set_yticks(range(1, len(data) + 1), [f"{d[0]} (n={len(d[1])})" for d in data])
        lows = [min(d[1]) for d in data]
        highs = [max(d[1]) for d in data]
        if min(lows) > 0 and max(highs) / min(lows) > 20:
            axes.set_xscale("log")  # models an order of magnitude apart stay readable
        axes.set_xlabel(time_axis(fidelity))
        axes.set_title(f"Latency on {device}")
        axes.grid(axis="x", alpha=0.3)
        plots.append(
            Plot(
                f"Latency on {device}",
                f"{device}: box = p25–p75, whiskers 1.5 IQR; {fidelity} figures",
                _png(figure),
            )
        )
    return plots


def base_vs_new_plots(results: Sequence[Mapping[str, Any]]) -> list[Plot]:
    """Overlaid histograms of the base and new model's samples, where a comparison kept both."""
    plots = []
    for record in sorted(results, key=markdown.item_name):
        raw = record.get("raw") or {}
        new, base = raw.get("samples_ns"), raw.get("baseline_samples_ns")
        if not new or not base:
            continue
        import numpy as np

        new_ms, base_ms = np.asarray(new) / 1e6, np.asarray(base) / 1e6
        both = np.concatenate([new_ms, base_ms])
        low, high = float(np.percentile(both, 1)), float(np.percentile(both, 99))
        edges: int | list[float] = np.linspace(low, high, 40).tolist() if high > low else 10
        figure, axes = _figure()
        axes.hist(base_ms, bins=edges, alpha=0.55, label=f"base (n={len(base_ms)})")
        axes.hist(new_ms, bins=edges, alpha=0.55, label=f"new (n={len(new_ms)})")
        axes.set_xlabel(time_axis(record["fidelity"]))
        axes.set_ylabel("samples")
        axes.legend()
        name = markdown.item_name(record)
        axes.set_title(f"{name}: base vs new")
        plots.append(Plot(f"{name}: base vs new", markdown.delta(record), _png(figure)))
    return plots[:MAX_PLOTS_PER_SECTION]


def accuracy_plots(results: Sequence[Mapping[str, Any]]) -> list[Plot]:
    """Per device, per-class accuracy of every model as grouped bars."""
    import numpy as np

    plots = []
    for device, records in sorted(_by_device(results, "accuracy").items()):
        with_classes = [r for r in records if (r.get("raw") or {}).get("per_class")]
        if not with_classes:
            continue
        classes = sorted(
            {c for r in with_classes for c in r["raw"]["per_class"]},
            key=lambda c: (len(c), c),
        )
        figure, axes = _figure(max(6.4, 0.5 * len(classes) + 2), 3.6)
        width = 0.8 / len(with_classes)
        positions = np.arange(len(classes))
        lowest = 1.0
        for index, record in enumerate(sorted(with_classes, key=lambda r: str(r["model"]))):
            per_class = record["raw"]["per_class"]
            values = [per_class.get(c, {}).get("accuracy", np.nan) for c in classes]
            lowest = min(lowest, float(np.nanmin(values)))
            axes.bar(positions + index * width, values, width, label=record["model"])
        axes.set_xticks(positions + 0.4 - width / 2, classes)
        axes.set_ylim(max(0.0, lowest - 0.05), 1.0)
        axes.set_xlabel("class")
        axes.set_ylabel("accuracy")
        axes.set_title(f"Accuracy per class on {device}")
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        plots.append(Plot(f"Accuracy per class on {device}", device, _png(figure)))
    return plots


def memory_plot(results: Sequence[Mapping[str, Any]]) -> list[Plot]:
    """Peak memory of every model on every device, split into the empty worker and the model."""
    records = sorted(
        (r for r in results if r["suite"] == "memory" and "peak_mb" in (r.get("figures") or {})),
        key=markdown.item_name,
    )
    if not records:
        return []
    figure, axes = _figure(6.4, 1.2 + 0.45 * len(records))
    names = [f"{r['model']}@{r['device']} ({r['fidelity']})" for r in records]
    peaks = [float(r["figures"]["peak_mb"]) for r in records]
    empty = [float(r["figures"].get("empty_peak_mb") or 0.0) for r in records]
    rows = range(len(records))
    axes.barh(rows, peaks, color="#4c72b0", label="peak (worker + model)")
    if any(empty):
        axes.barh(rows, empty, color="#a1b4d6", label="empty worker")
    for row, record in zip(rows, records, strict=True):
        limit = record["figures"].get("limit_mb")
        if isinstance(limit, (int, float)):
            axes.plot([limit, limit], [row - 0.4, row + 0.4], color="#cf222e")
    axes.set_yticks(list(rows), names)
    axes.set_xlabel("MB (peak RSS)")
    axes.set_title("Peak memory")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    limits = any(isinstance(r["figures"].get("limit_mb"), (int, float)) for r in records)
    caption = "red marks: the device's memory limit" if limits else "no memory limit set"
    return [Plot("Peak memory", caption, _png(figure))]


def trend_plots(trends: Sequence[Trend]) -> list[Plot]:
    """One plot per figure name: a line per item over runs, level changes marked."""
    by_figure: dict[tuple[str, str], list[Trend]] = {}
    for trend in trends:
        if trend.figure in headline_figures() or trend.figure == "ratio":
            by_figure.setdefault((trend.figure, trend.fidelity), []).append(trend)
    plots = []
    for (figure_name, fidelity), group in sorted(by_figure.items()):
        figure, axes = _figure(7.2, 3.6)
        for trend in group:
            values = [p.value for p in trend.points]
            (line,) = axes.plot(
                values, marker="o", markersize=3, label=f"{trend.model}@{trend.device}"
            )
            for index, _, after in trend.steps:
                axes.axvline(index - 0.5, color=line.get_color(), linestyle="--", alpha=0.6)
                axes.plot([index], [after], marker="v", color="#cf222e", markersize=8)
        longest = max(group, key=lambda t: len(t.points))
        ticks = list(range(len(longest.points)))
        step = max(1, len(ticks) // 10)
        axes.set_xticks(
            ticks[::step],
            [(p.commit or p.created)[:7] for p in longest.points][::step],
            rotation=45,
            fontsize=7,
        )
        unit = figure_name.endswith("_ms")
        axes.set_ylabel(
            time_axis(fidelity) if unit else f"{markdown.label(figure_name)} ({fidelity})"
        )
        axes.set_xlabel("run (commit)")
        axes.set_title(f"{markdown.label(figure_name)} over runs ({fidelity})")
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        axes.grid(alpha=0.3)
        plots.append(
            Plot(
                f"Trend of {figure_name} ({fidelity})",
                "dashed lines and red triangles: level changes found by step detection",
                _png(figure),
            )
        )
    return plots[:MAX_PLOTS_PER_SECTION]


def _status(status: str) -> str:
    return f'<span class="{STATUS_CLASS.get(status, "note")}">{escape(status)}</span>'


def _table(header: Sequence[str], body: Sequence[Sequence[str]], raw_last: bool = False) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for row in body:
        cells = [escape(c) for c in row[:-1]] + [row[-1] if raw_last else escape(row[-1])]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _section(title: str, plots: Sequence[Plot]) -> str:
    if not plots:
        return ""
    figures = "".join(
        f'<figure><img alt="{escape(p.title)}" '
        f'src="data:image/png;base64,{base64.b64encode(p.png).decode()}">'
        f"<figcaption>{escape(p.caption)}</figcaption></figure>"
        for p in plots
    )
    return f"<h2>{escape(title)}</h2>{figures}"


def render(
    document: Mapping[str, Any],
    *,
    verdict: Overall | None = None,
    trends: Sequence[Trend] = (),
    title: str = "harness report",
) -> str:
    verdict = verdict or overall(document)
    results = document.get("results", [])
    body = [
        f"<h1>{escape(title)}: {_status(verdict.status)}</h1>",
        f'<p class="note">{escape(verdict.headline())} · created '
        f"{escape(str(document.get('created')))} · harness "
        f"{escape(str(document.get('harness_version')))}</p>",
    ]
    if verdict.problems:
        body.append("<ul>" + "".join(f"<li>{escape(p)}</li>" for p in verdict.problems) + "</ul>")
    header = ("device", "model", "suite", "figure", "vs baseline", "gates", "verdict")
    table = [
        (r.device, r.model, r.suite, r.figure, r.delta, r.gates, _status(r.status))
        for r in markdown.rows(results)
    ]
    body += ["<h2>Gates</h2>", _table(header, table, raw_last=True)]
    why = [
        (markdown.item_name(r), r["verdict"]["status"], "; ".join(markdown.reasons(r)))
        for r in sorted(results, key=markdown.item_name)
        if r["verdict"]["status"] not in ("PASS", "NO GATE") and markdown.reasons(r)
    ]
    if why:
        body += ["<h2>Why</h2>", _table(("item", "verdict", "reasons"), why)]
    used = sorted({r["fidelity"] for r in results} & set(markdown.FOOTNOTE))
    body += [f'<p class="note">{escape(markdown.FOOTNOTE[f])}</p>' for f in used]
    body.append(_section("Latency", latency_plots(results)))
    body.append(_section("Base vs new", base_vs_new_plots(results)))
    body.append(_section("Accuracy per class", accuracy_plots(results)))
    body.append(_section("Memory", memory_plot(results)))
    if trends:
        body.append(_section("Trends", trend_plots(trends)))
        steps = markdown.step_rows(trends)
        if steps:
            body.append("<h3>Level changes</h3>" + _table(markdown.STEP_HEADER, steps))
    devices = [
        (
            d["name"],
            str(d.get("arch")),
            str(d.get("cpu") or "-"),
            str(d.get("cpus") or "all"),
            f"{d['memory_mb']} MB" if d.get("memory_mb") else "-",
            str(d.get("fidelity")),
        )
        for d in document.get("devices", [])
    ]
    body += [
        "<h2>Devices</h2>",
        _table(("device", "arch", "cpu", "cpus", "memory", "fidelity"), devices),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}: {escape(verdict.status)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
