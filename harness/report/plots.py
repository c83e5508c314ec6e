"""The report's plots, drawn with matplotlib's Agg canvas (no display, no pyplot state), as PNG
bytes the HTML report inlines: latency distributions per device (base beside head where the
comparison kept the base's samples), memory as each model's share against the device's limit on
a log scale, accuracy per class (base beside head where the record has it), trends from the
history with each level change marked at its commit. Axes say the fidelity: an emulated time is
labelled as QEMU wall-clock, never as device time."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.registry import headline_figures
from harness.report import wording
from harness.report.figures import label, number
from harness.store import Trend

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_PLOTS_PER_SECTION = 24
BASE_COLOUR, HEAD_COLOUR = "#a0a7b0", "#4c72b0"


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


def _boxes(
    axes: Axes, series: Sequence[Any], positions: Sequence[float], width: float, colour: str
) -> Any:
    """Horizontal box plots of `series` at `positions`, filled with `colour`."""
    drawn = axes.boxplot(
        series,
        positions=positions,
        widths=width,
        orientation="horizontal",
        showfliers=False,
        patch_artist=True,
    )
    for box in drawn["boxes"]:
        box.set_facecolor(colour)
    return drawn


def latency_plots(results: Sequence[Mapping[str, Any]]) -> list[Plot]:
    """One box plot per device: every model's latency distribution from its raw samples, the
    base's beside the head's where the comparison kept them (`raw.baseline_samples_ns`)."""
    plots = []
    for device, every in sorted(_by_device(results, "latency").items()):
        # A board estimate (its gate's figure) is drawn as such, never as QEMU wall-clock.
        estimated = [r for r in every if "estimated_ms" in (r.get("figures") or {})]
        if estimated:
            plots.append(_estimate_plot(device, estimated))
        records = [r for r in every if r not in estimated]
        data = [
            (r, [s / 1e6 for s in r["raw"]["samples_ns"]], r["raw"].get("baseline_samples_ns"))
            for r in sorted(records, key=lambda r: str(r["model"]))
            if (r.get("raw") or {}).get("samples_ns")
        ]
        if not data:
            continue
        fidelity = str(data[0][0]["fidelity"])
        paired = any(base for _, _, base in data)
        figure, axes = _figure(6.4, 1.2 + (0.75 if paired else 0.5) * len(data))
        rows = range(1, len(data) + 1)
        offset, width = (0.2, 0.35) if paired else (0.0, 0.6)
        head = _boxes(axes, [d[1] for d in data], [r - offset for r in rows], width, HEAD_COLOUR)
        values = [v for d in data for v in d[1]]
        if paired:
            based = [
                (row, [b / 1e6 for b in d[2]]) for row, d in zip(rows, data, strict=True) if d[2]
            ]
            base = _boxes(
                axes, [b for _, b in based], [row + offset for row, _ in based], width, BASE_COLOUR
            )
            values += [v for _, b in based for v in b]
            axes.legend([head["boxes"][0], base["boxes"][0]], ["head", "base"], fontsize=8)
        ticks = [
            f"{d[0]['model']} (n={len(d[1])})\n{wording.delta(d[0])}" if d[2] else d[0]["model"]
            for d in data
        ]
        axes.set_yticks(list(rows), ticks, fontsize=8)
        axes.invert_yaxis()  # the first model on top, as in the tables
        low, high = min(values), max(values)
        if low > 0 and high / low > 20:
            axes.set_xscale("log")  # models an order of magnitude apart stay readable
        axes.set_xlabel(time_axis(fidelity), fontsize=8)
        axes.set_title(f"Latency on {device}" + (": head vs base" if paired else ""))
        axes.grid(axis="x", alpha=0.3)
        caption = f"{device}: box = p25–p75, whiskers 1.5 IQR; {fidelity} figures"
        if paired:
            caption += "; grey: the base model's samples, blue: this change's"
        plots.append(Plot(f"Latency on {device}", caption, _png(figure)))
    return plots


def _estimate_plot(device: str, records: Sequence[Mapping[str, Any]]) -> Plot:
    """The timing model's estimates of one inference on an emulated board, each with its
    error band: the figures its latency gates read."""
    ordered = sorted(records, key=lambda r: str(r["model"]))
    figure, axes = _figure(6.4, 1.2 + 0.5 * len(ordered))
    rows = list(range(1, len(ordered) + 1))
    for row, record in zip(rows, ordered, strict=True):
        figures = record["figures"]
        value = float(figures["estimated_ms"])
        low = float(figures.get("estimated_ms_low", value))
        high = float(figures.get("estimated_ms_high", value))
        axes.errorbar(
            [value], [row], xerr=[[value - low], [high - value]], fmt="o", color=HEAD_COLOUR
        )
    axes.set_yticks(rows, [str(r["model"]) for r in ordered], fontsize=8)
    axes.invert_yaxis()
    axes.set_ylim(len(ordered) + 0.5, 0.5)
    axes.set_xlabel(time_axis("estimated"), fontsize=8)
    axes.set_title(f"Estimated latency on {device}")
    axes.grid(axis="x", alpha=0.3)
    caption = (
        f"{device}: the timing model's estimate per inference with its error band (estimated "
        "figures, from instructions counted under QEMU, not timed by the emulator's clock)"
    )
    return Plot(f"Estimated latency on {device}", caption, _png(figure))


def accuracy_plots(results: Sequence[Mapping[str, Any]]) -> list[Plot]:
    """Per device, per-class accuracy: grouped bars, the base's beside the head's where the
    record has them (`raw.baseline_per_class`); above a few models, a heat map whose cells
    carry the change against the base."""
    plots = []
    for device, records in sorted(_by_device(results, "accuracy").items()):
        with_classes = sorted(
            (r for r in records if (r.get("raw") or {}).get("per_class")),
            key=lambda r: str(r["model"]),
        )
        if not with_classes:
            continue
        classes = sorted(
            {c for r in with_classes for c in r["raw"]["per_class"]}, key=lambda c: (len(c), c)
        )
        draw = _accuracy_bars if len(with_classes) <= BARS_UP_TO else _accuracy_heatmap
        png = draw(device, with_classes, classes)
        plots.append(Plot(f"Accuracy per class on {device}", device, png))
    return plots


BARS_UP_TO = 4  # models per device drawn as grouped bars; more as a heat map


def _per_class(record: Mapping[str, Any], key: str, classes: Sequence[str]) -> list[float]:
    table = record["raw"].get(key) or {}
    return [float(table.get(c, {}).get("accuracy", float("nan"))) for c in classes]


def _accuracy_bars(device: str, records: Sequence[Mapping[str, Any]], classes: list[str]) -> bytes:
    import numpy as np

    series = []  # (name, values, is the base, colour): a model's base and head share a colour
    for index, record in enumerate(records):
        colour = f"C{index}"
        if record["raw"].get("baseline_per_class"):
            base = _per_class(record, "baseline_per_class", classes)
            series.append((f"{record['model']} base", base, True, colour))
        series.append(
            (str(record["model"]), _per_class(record, "per_class", classes), False, colour)
        )
    figure, axes = _figure(min(12.0, max(6.4, 0.25 * len(classes) * len(series) + 2)), 3.6)
    width = 0.8 / len(series)
    positions = np.arange(len(classes))
    for index, (name, values, is_base, colour) in enumerate(series):
        axes.bar(
            positions + index * width,
            values,
            width,
            label=name,
            color=colour,
            hatch="//" if is_base else None,
            alpha=0.45 if is_base else 1.0,
        )
    lowest = float(np.nanmin([v for _, values, _, _ in series for v in values]))
    axes.set_xticks(positions + 0.4 - width / 2, classes)
    axes.set_ylim(max(0.0, lowest - 0.05), 1.0)
    axes.set_xlabel("class")
    axes.set_ylabel("accuracy")
    axes.set_title(f"Accuracy per class on {device}")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure)


def _accuracy_heatmap(
    device: str, records: Sequence[Mapping[str, Any]], classes: list[str]
) -> bytes:
    import numpy as np

    head = np.array([_per_class(r, "per_class", classes) for r in records])
    base = np.array([_per_class(r, "baseline_per_class", classes) for r in records])
    figure, axes = _figure(max(6.4, 0.7 * len(classes) + 3), 1.2 + 0.32 * len(records))
    image = axes.imshow(
        head, aspect="auto", cmap="RdYlGn", vmin=max(0.0, np.nanmin(head) - 0.05), vmax=1.0
    )
    for row, col in np.ndindex(head.shape):
        change = head[row, col] - base[row, col]
        text = f"{head[row, col]:.2f}" + (
            f"\n{change:+.2f}" if np.isfinite(change) and change else ""
        )
        axes.text(col, row, text, ha="center", va="center", fontsize=6)
    axes.set_xticks(range(len(classes)), classes)
    axes.set_yticks(range(len(records)), [str(r["model"]) for r in records], fontsize=8)
    axes.set_xlabel("class (second line in a cell: change against the base)")
    axes.set_title(f"Accuracy per class on {device}")
    figure.colorbar(image, ax=axes, label="accuracy")
    return _png(figure)


def memory_plots(results: Sequence[Mapping[str, Any]]) -> list[Plot]:
    """Per device: each model's share of memory (its peak less the empty worker's) and the
    whole peak, against the device's limit, on a log scale so 5 MB and 4,096 MB both show."""
    plots = []
    for device, records in sorted(_by_device(results, "memory").items()):
        records = sorted(
            (r for r in records if "peak_mb" in (r.get("figures") or {})),
            key=lambda r: str(r["model"]),
        )
        if not records:
            continue
        figure, axes = _figure(6.4, 1.4 + 0.4 * len(records))
        rows = list(range(len(records)))
        peaks = [
            float(r["figures"].get("board_peak_mb") or r["figures"]["peak_mb"]) for r in records
        ]
        shares = [max(float(r["figures"].get("model_share_mb") or 0.0), 0.01) for r in records]
        axes.barh(rows, peaks, color="#c9d3e6", label="whole worker's peak (headline)")
        axes.barh(rows, shares, height=0.45, color=HEAD_COLOUR, label="the model's share")
        limits = {
            float(r["figures"]["limit_mb"])
            for r in records
            if _is_number(r["figures"].get("limit_mb"))
        }
        for limit in sorted(limits):
            axes.axvline(limit, color="#cf222e", linewidth=2)
            axes.annotate(
                f"limit {number(limit, 'limit_mb')}",
                (limit, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(-4, -4),
                textcoords="offset points",
                ha="right",
                va="top",
                color="#cf222e",
                fontsize=8,
            )
        for row, record, share in zip(rows, records, shares, strict=True):
            limit = record["figures"].get("limit_mb")
            note = f"{number(share, 'model_share_mb')}"
            if _is_number(limit) and limit:
                note += f" = {share / float(limit):.2%} of limit"
            axes.annotate(
                note,
                (share, row),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        axes.set_xscale("log")
        high = max([*peaks, *limits]) * 1.5
        axes.set_xlim(min(shares) / 2, high)
        axes.set_yticks(rows, [f"{r['model']} ({r['fidelity']})" for r in records], fontsize=8)
        axes.invert_yaxis()
        axes.set_xlabel("MB, log scale (peak RSS)")
        axes.set_title(f"Memory on {device}")
        axes.legend(fontsize=7, loc="lower right")
        caption = "red line: the device's memory limit" if limits else "no memory limit set"
        plots.append(Plot(f"Memory on {device}", f"{device}: {caption}", _png(figure)))
    return plots[:MAX_PLOTS_PER_SECTION]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def trend_plots(trends: Sequence[Trend]) -> list[Plot]:
    """One plot per figure name: a line per item over runs, each level change marked at the
    commit that introduced it."""
    by_figure: dict[tuple[str, str], list[Trend]] = {}
    for trend in trends:
        if trend.figure in headline_figures() or trend.figure == "ratio":
            by_figure.setdefault((trend.figure, trend.fidelity), []).append(trend)
    plots = []
    for (figure_name, fidelity), group in sorted(by_figure.items()):
        plots.append(_trend_plot(figure_name, fidelity, group))
    return plots[:MAX_PLOTS_PER_SECTION]


def trend_plots_by_device(trends: Sequence[Trend]) -> list[Plot]:
    """The nightly's plots: per device and headline figure, a line per model."""
    grouped: dict[tuple[str, str, str], list[Trend]] = {}
    for trend in trends:
        grouped.setdefault((trend.device, trend.figure, trend.fidelity), []).append(trend)
    return [
        _trend_plot(figure, fidelity, group, where=f" on {device}")
        for (device, figure, fidelity), group in sorted(grouped.items())
    ][:MAX_PLOTS_PER_SECTION]


FLAT_GREY = 8  # above this many lines, series without a level change are drawn grey, unlabelled


def _trend_plot(figure_name: str, fidelity: str, group: Sequence[Trend], where: str = "") -> Plot:
    figure, axes = _figure(7.2, 3.6)
    crowded = len(group) > FLAT_GREY
    for trend in group:
        values = [p.value for p in trend.points]
        name = f"{trend.model}@{trend.device}" if not where else str(trend.model)
        if crowded and not trend.steps:
            axes.plot(values, color="#c0c4c9", linewidth=0.8)
            continue
        (line,) = axes.plot(values, marker="o", markersize=3, label=name)
        for index, _, after in trend.steps:
            axes.axvline(index - 0.5, color=line.get_color(), linestyle="--", alpha=0.6)
            axes.plot([index], [after], marker="v", color="#cf222e", markersize=8)
            commit = trend.points[index].commit or trend.points[index].created
            axes.annotate(
                commit[:7],
                (index, after),
                xytext=(4, 6),
                textcoords="offset points",
                fontsize=7,
                color="#cf222e",
            )
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
    name = time_axis(fidelity) if unit else f"{label(figure_name)} ({fidelity})"
    axes.set_ylabel(name, fontsize=7)
    axes.margins(y=0.15)  # room for the commit labels at the steps
    axes.set_xlabel("run (commit)")
    axes.set_title(f"{label(figure_name)} over runs{where} ({fidelity})")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.grid(alpha=0.3)
    caption = (
        "dashed lines and red triangles: level changes found by step detection, labelled with "
        "the commit that introduced them" + ("; grey: series without one" if crowded else "")
    )
    return Plot(f"Trend of {figure_name}{where} ({fidelity})", caption, _png(figure))
