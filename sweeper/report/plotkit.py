"""Figure making for the report's plots: the house style, axis and legend helpers, and
the export of a matplotlib figure to an SVG string that can sit inline in an HTML page
next to other SVGs (no XML header, no date, ids unique per plot).

No pyplot and no global backend: a ``matplotlib.figure.Figure`` saved with format="svg".
"""

from __future__ import annotations

import io
import re

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from sweeper.report import fmt

STYLE = {
    "svg.fonttype": "none",  # real <text>: small files, and no glyph ids repeated across SVGs
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def figure(width: float = 6.4, height: float = 3.6):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def to_svg(fig: Figure, name: str) -> str:
    """The figure as inline SVG; ``name`` prefixes its ids."""
    legend(fig.axes[0])  # once, last: it may grow the figure
    buf = io.StringIO()
    # A fixed salt keeps the hashed ids (clip paths, markers) the same from run to run.
    with matplotlib.rc_context({"svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return prefix_ids(svg, name)


def prefix_ids(svg: str, prefix: str) -> str:
    """Every SVG numbers its ids from 1 (line2d_1, patch_1, ...); in one HTML document
    they must be unique, so each id and each reference to one gets the plot's name."""
    svg = re.sub(r'(?<=\s)id="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r'((?:xlink:)?href)="#', rf'\1="#{prefix}-', svg)
    return re.sub(r"url\(#", f"url(#{prefix}-", svg)


def level_axis(ax, levels: list) -> None:
    """Ticks at the levels swept (log scale when they span a wide range, as doubling
    sweeps do); at most 12 labels so they stay legible."""
    if levels and levels[0] > 0 and levels[-1] / levels[0] >= 8:
        ax.set_xscale("log", base=2)
    step = max(1, -(-len(levels) // 12))
    ticks = levels[::step]
    ax.set_xticks(ticks, [fmt.value(v) for v in ticks])
    ax.minorticks_off()


def _log_if_wide(axis, set_scale, values: pd.Series, ratio: float) -> None:
    v = values[values > 0]
    if len(v) and v.max() / v.min() >= ratio:
        set_scale("log")
        axis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        axis.set_major_formatter(FuncFormatter(lambda x, _: fmt.value(x)))
        axis.set_minor_formatter(NullFormatter())


def log_x_if_wide(ax, values: pd.Series) -> None:
    _log_if_wide(ax.xaxis, ax.set_xscale, values, 16)


def log_y_if_wide(ax, values: pd.Series) -> None:
    # One overloaded point (a queue that grew) would flatten every other line.
    _log_if_wide(ax.yaxis, ax.set_yscale, values, 20)


def slo_line(ax, slo: float | None, horizontal: bool) -> None:
    if slo is None:
        return
    draw = ax.axhline if horizontal else ax.axvline
    draw(slo, color="C3", lw=1, ls=":", label=f"SLO p99 {fmt.value(slo)} ms")


def legend(ax) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(handles) <= 4:
        ax.legend(fontsize=7, frameon=False, loc="best")
        return
    # Many lines: the legend goes under the axes (a legend inside would hide the data),
    # and the figure grows by its height instead of squeezing the axes.
    rows = -(-len(handles) // 2)
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig = ax.get_figure()
    fig.set_figheight(fig.get_figheight() + 0.16 * rows)


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
