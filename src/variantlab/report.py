"""`report`: a ladder's variation table as one self-contained HTML page, with its Pareto chart.

The page carries everything inline (styles, the chart as a base64 PNG), so it opens with no
network and can be mailed or archived as one file. The chart is drawn with matplotlib's
non-interactive Agg backend; the same PNG is also written beside the page.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from .ladder import LadderResult, LadderRow, speed_range
from .text import rate

TIERS = ("fastest", "balanced", "best quality")


def pareto_front(points: list[tuple[float, float]], lower_x_better: bool) -> list[int]:
    """Indexes of the points no other point beats on both axes (y: higher is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        beaten = any((ox <= x if lower_x_better else ox >= x) and oy >= y and (ox, oy) != (x, y)
                     for j, (ox, oy) in enumerate(points) if j != i)
        if not beaten:
            front.append(i)
    return front


def _label_rows(xs: list[float], ys: list[float]) -> list[int]:
    """For each point, how many labels of nearby points (left of it, about the same height) its
    own label must go below, so that labels of rungs that measure alike do not print over each other."""
    span = (max(xs) - min(xs)) or 1.0
    rows: list[int] = [0] * len(xs)
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    for n, i in enumerate(order):
        near = {rows[j] for j in order[:n] if (xs[i] - xs[j]) < 0.22 * span and abs(ys[i] - ys[j]) < 2.5}
        rows[i] = min(k for k in range(len(xs) + 1) if k not in near)
    return rows


def chart_png(result: LadderResult) -> bytes:
    """Accuracy and mean KLD against memory and against speed, each Pareto front drawn, picks marked.

    pass@1 on a small suite rarely separates rungs (the intervals overlap), while mean KLD does:
    the second row charts it on a log scale.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    if result.twin:
        return _twin_chart_png(result, Figure(figsize=(8, 5.5), dpi=110))
    fig = Figure(figsize=(11, 8.6), dpi=110)
    axes = fig.subplots(2, 2, sharey="row")
    accuracy = [r for r in result.rows if r.pass_at_1 is not None]
    kld = [r for r in result.rows if r.mean_kld]
    _panel_row(axes[0], accuracy, result, _ACCURACY)
    _panel_row(axes[1], kld, result, _KLD)
    axes[0][0].set_ylabel(f"pass@1 (%) on {accuracy[0].problems if accuracy else 0} problems, 95% interval")
    axes[1][0].set_ylabel("mean KL-divergence (nats/token, log scale)")
    axes[1][0].set_yscale("log")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{result.source}: accuracy and KL-divergence against memory and speed (grey: does not fit)",
                 fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _twin_chart_png(result: LadderResult, fig: Any) -> bytes:
    """A twin ladder has no accuracy: generation speed (at depth 0 and at the context's end) against measured memory."""
    ax = fig.subplots()
    rows = [r for r in result.rows if r.fits and r.gen_tokens_per_s is not None]
    xs = [(r.peak_rss_bytes or r.memory_bytes) / 2**30 for r in rows]
    ax.scatter(xs, [r.gen_tokens_per_s for r in rows], color="#2a7ab0", label="depth 0", zorder=3)
    deep = [(x, r.gen_tokens_per_s_at_depth) for x, r in zip(xs, rows) if r.gen_tokens_per_s_at_depth]
    if deep:
        ax.scatter([d[0] for d in deep], [d[1] for d in deep], color="#e07b39", marker="s",
                   label=f"depth {rows[0].depth}", zorder=3)
    picked = picks_by_model(result)
    for r, x in zip(rows, xs):
        tag = r.file_type + (f"  [{', '.join(picked[r.model])}]" if r.model in picked else "")
        ax.annotate(tag, (x, r.gen_tokens_per_s or 0), textcoords="offset points", xytext=(6, 5), fontsize=8)
    ax.set_xlabel(f"measured peak memory at {result.ctx} tokens (GiB)")
    ax.set_ylabel("generation (tokens/s)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{result.source}: measured on twins (random weights; accuracy not measured)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# (value on the y axis, its error bars or None, whether higher is better)
_ACCURACY = (lambda r: (r.pass_at_1 or 0) * 100,
             lambda r: (max(0.0, (r.pass_at_1 or 0) - r.pass_at_1_low) * 100, max(0.0, r.pass_at_1_high - (r.pass_at_1 or 0)) * 100),
             True)
_KLD = (lambda r: r.mean_kld or 0.0, None, False)
_X_AXES = (("memory_bytes", "memory at context (GiB)", True, 1 / 2**30), ("gen_tokens_per_s", "generation (tokens/s)", False, 1.0))


def _panel_row(axes: Any, rows: list[LadderRow], result: LadderResult, y_spec: Any) -> None:
    y_of, err_of, higher_better = y_spec
    picked = picks_by_model(result)
    for ax, (key, label, lower_x_better, scale) in zip(axes, _X_AXES):
        xs = [(getattr(r, key) or 0) * scale for r in rows]
        ys = [y_of(r) for r in rows]
        if err_of is not None:
            bars = [err_of(r) for r in rows]
            ax.errorbar(xs, ys, yerr=[[b[0] for b in bars], [b[1] for b in bars]], fmt="none", ecolor="#bbbbbb",
                        elinewidth=1, capsize=3, zorder=1)
        if key == "gen_tokens_per_s":  # the range of the bench repetitions
            ranges = [speed_range(r) for r in rows]
            ax.errorbar(xs, ys, xerr=[[max(0.0, x - lo) for x, (lo, _) in zip(xs, ranges)],
                                      [max(0.0, hi - x) for x, (_, hi) in zip(xs, ranges)]],
                        fmt="none", ecolor="#bbbbbb", elinewidth=1, capsize=3, zorder=1)
        ax.scatter(xs, ys, c=["#2a7ab0" if r.fits else "#c0c0c0" for r in rows], s=46, zorder=3)
        ranked = [(x, y if higher_better else -y) for x, y in zip(xs, ys)]
        front = sorted(pareto_front(ranked, lower_x_better), key=lambda i: xs[i])
        ax.plot([xs[i] for i in front], [ys[i] for i in front], color="#e07b39", linewidth=1.5, zorder=2,
                marker="o", markersize=12, markerfacecolor="none", label="Pareto front")  # rings: a front of one shows
        heights = ys if higher_better else [-math.log10(max(y, 1e-12)) * 10 for y in ys]  # label rows in plot units
        for r, x, y, lift in zip(rows, xs, ys, _label_rows(xs, heights)):
            tag = r.file_type + (f"  [{', '.join(picked[r.model])}]" if r.model in picked else "")
            ax.annotate(tag, (x, y), textcoords="offset points", xytext=(6, 5 - 11 * lift), fontsize=8)
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)


def _cell(value: Any, fmt: str, scale: float = 1.0) -> str:
    return "–" if value is None else format(value * scale, fmt)


def picks_by_model(result: LadderResult) -> dict[str, list[str]]:
    picked: dict[str, list[str]] = {}
    for tier, p in result.picks.items():
        if p:
            picked.setdefault(p.model, []).append(tier)
    return picked


def table_rows(result: LadderResult) -> list[list[str]]:
    """The variation table as text cells, shared by the terminal table and the HTML page."""
    picked = picks_by_model(result)
    out = []
    for r in result.rows:
        out.append([
            r.file_type, _cell(r.file_bytes, ".0f", 1 / 2**20), _cell(r.memory_bytes, ".0f", 1 / 2**20),
            "yes" if r.fits else "no", _cell(r.load_s, ".2f"), _cell(r.ttft_s, ".3f"),
            _speed_cell(r), rate(r.gen_tokens_per_s_at_depth),
            (f"{r.pass_at_1:.1%} [{r.pass_at_1_low:.0%}–{r.pass_at_1_high:.0%}]" if r.pass_at_1 is not None else "–"),
            _cell(r.mean_kld, ".4f"), r.speculation.split(" (")[0] if r.speculation else "–", ", ".join(picked.get(r.model, [])),
        ])
    return out


def _speed_cell(row: LadderRow) -> str:
    """Median generation speed with the range of its repetitions, so a reader sees which rungs the noise cannot separate."""
    low, high = row.gen_tokens_per_s_min, row.gen_tokens_per_s_max
    median = rate(row.gen_tokens_per_s)
    if row.gen_tokens_per_s_reps == 1:  # one rep has no range: a (x–x) would look like no noise at all
        return f"{median} (one rep)"
    return median if low is None or high is None else f"{median} ({rate(low)}–{rate(high)})"


def twin_table_rows(result: LadderResult) -> list[list[str]]:
    """A twin ladder's table as text cells: measured memory and speed, fit's verdict where it did not fit."""
    picked = picks_by_model(result)
    depth = next((r.depth for r in result.rows if r.depth), 0)
    out = []
    for r in result.rows:
        gb = 1e-9
        if not r.fits:
            out.append([r.file_type, _cell(r.file_bytes, ".2f", gb), _cell(r.memory_bytes, ".2f", 1 / 2**30), "–",
                        f"refused by fit: {r.verdict}", "–", "–", "–", "–", "–", "–", ""])
            continue
        out.append([
            r.file_type, _cell(r.file_bytes, ".2f", gb), _cell(r.memory_bytes, ".2f", 1 / 2**30),
            _cell(r.peak_rss_bytes, ".2f", 1 / 2**30), _cell(r.load_s, ".2f"), _cell(r.ttft_s, ".2f"),
            rate(r.prompt_tokens_per_s), _speed_cell(r),
            rate(r.prompt_tokens_per_s_at_depth) if depth else "–",
            rate(r.gen_tokens_per_s_at_depth) if depth else "–",
            "not measured: twin", ", ".join(picked.get(r.model, [])),
        ])
    return out


TWIN_TABLE_HEADERS = ["type", "file GB", "fit GiB at ctx", "measured GiB at ctx", "load s", "TTFT s", "prompt tok/s",
                      "gen tok/s (range)", "prompt tok/s at ctx", "gen tok/s at ctx", "accuracy", "pick"]


TABLE_HEADERS = ["type", "file MiB", "memory MiB at ctx", "fits", "load s", "TTFT s", "gen tok/s (range)",
                 "gen tok/s at ctx", "pass@1 [95% CI]", "mean KLD", "speculation (measured)", "pick"]


def render_html(result: LadderResult, png: bytes) -> str:
    """The whole page: table, chart, picks, rules, machine, and how each figure was measured."""
    e = html.escape
    headers, rows = (TWIN_TABLE_HEADERS, twin_table_rows(result)) if result.twin else (TABLE_HEADERS, table_rows(result))
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    picks = "".join(f"<li><b>{e(t)}</b>: {e(p.model)} ({e(p.file_type)}): {e(p.reason)}</li>" if p else
                    f"<li><b>{e(t)}</b>: nothing fits</li>" for t, p in result.picks.items())
    rules = "".join(f"<li>{e(r)}</li>" for r in result.rules)
    how = "".join(f"<dt>{e(k)}</dt><dd><code>{e(v)}</code></dd>" for k, v in result.how.items())
    m = result.machine
    machine = (f"{m.get('cpu', '?')}, {m.get('physical_cores', '?')} cores, "
               f"{(m.get('ram_total_bytes') or 0) / 2**30:.1f} GiB RAM, "
               f"memory bandwidth {(m.get('memory_bandwidth_bytes_per_s') or 0) / 1e9:.1f} GB/s, "
               f"GPUs: {', '.join(g.get('name', '?') for g in m.get('gpus') or []) or 'none'}")
    lineage = sorted({r.lineage for r in result.rows})
    chart = base64.b64encode(png).decode()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>variantlab report: {e(result.source)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child, td:last-child {{ text-align: left; }}
img {{ max-width: 100%; border: 1px solid #eee; }} code {{ font-size: 90%; }}
</style></head><body>
<h1>Variation table: {e(result.source)}</h1>
<p>Task <b>{e(result.task)}</b>, context {result.ctx} tokens, suite <b>{e(result.suite)}</b>,
ladder run {result.run_id} ({e(str(result.created_at or ''))}).
Reference for KL-divergence: {e(result.reference)} ({e(result.reference_note)}).</p>
<p>Lineage of the rungs: {e('; '.join(lineage))}.</p>
<table id="variation-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Picks</h2><ul id="picks">{picks}</ul>
<h2>Rules</h2><ul>{rules}</ul>
<h2>Accuracy and KL-divergence against memory and speed</h2>
<img id="pareto-chart" alt="Pareto charts of pass@1 and mean KL-divergence against memory and generation speed" src="data:image/png;base64,{chart}">
<h2>Machine</h2><p id="machine">{e(machine)}</p>
<h2>How each figure was measured</h2><dl>{how}</dl>
</body></html>
"""


def write_report(result: LadderResult, html_path: Path) -> tuple[Path, Path]:
    """Write the page and the chart's PNG beside it (same name, .png); return both paths."""
    png = chart_png(result)
    png_path = html_path.with_suffix(".png")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.write_bytes(png)
    html_path.write_text(render_html(result, png), encoding="utf-8")
    return html_path, png_path
