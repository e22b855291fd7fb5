"""Charts of the low-rank page: the spectrum of dense attention with its cumulative
energy and effective ranks, error against k for the three methods, and one
query's signed effective weights beside dense. Data in, plotly figure out.

The side-by-side maps use common.pooled_heatmap with diverging=True: Linformer's
Gaussian projections give signed weights, which a sequential scale would hide.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.figures import colours, common
from explorer.figures.common import as_array
from explorer.mechanisms import REGISTRY

METHOD = next(p for p in REGISTRY["lowrank"].params if p.name == "method")  # its words name each curve
METHOD_COLOURS = dict(zip(METHOD.choices, colours.SERIES))
LEVELS = (0.9, 0.99)
MAX_POINTS = 2000  # singular values drawn; longer spectra are thinned evenly on the log axis


def _thin(count: int, points: int = MAX_POINTS) -> np.ndarray:
    """Indices 0..count-1, at most `points` of them, evenly spaced on a log scale (first and last kept)."""
    if count <= points:
        return np.arange(count)
    return np.unique(np.geomspace(1, count, points).round().astype(int) - 1)


def _mark_rank(fig: go.Figure, rank: int, level: float, count: int) -> None:
    """A dashed line at an effective rank on the energy chart, labelled inside the plot beside it.

    An annotation on a log axis is placed in log10 units (a shape in data units), so the label
    goes at log10(rank); it leans left of the line in the right half, so it never leaves the plot.
    """
    fig.add_vline(x=rank, line={"dash": "dash", "color": colours.NEUTRAL, "width": 1}, row=1, col=2)
    right_half = math.log10(rank) > math.log10(max(count, 2)) / 2
    fig.add_annotation(x=math.log10(rank), y=level, xref="x2", yref="y2", text=f"{level:.0%} at k = {rank:,}",
                       showarrow=False, xanchor="right" if right_half else "left", yanchor="top",
                       xshift=-4 if right_half else 4, bgcolor="rgba(255,255,255,0.75)")


def spectrum_chart(values, energy, ranks: dict[float, int | None], chosen: int | None = None,
                   title: str = "", height: int = 380) -> go.Figure:
    """Singular values (log-log) beside their cumulative energy, with the effective ranks marked.

    values, energy: [r] descending singular values and cumulative energy share;
    ranks: energy level -> effective rank (None when beyond the computed values);
    chosen: the mechanism's k, drawn as a dotted line. Both x axes run from 1 to r and the
    σ axis over the positive values shown: autorange would stretch to fit the labels.
    """
    s, e = as_array(values), as_array(energy)
    pick = _thin(len(s))
    x = pick + 1
    fig = make_subplots(rows=1, cols=2, subplot_titles=("singular values", "cumulative energy"),
                        horizontal_spacing=0.1)
    fig.add_trace(go.Scatter(x=x, y=s[pick], mode="lines+markers", marker={"size": 3}, name="σ_i",
                             line={"color": colours.MECHANISMS["lowrank"]},
                             hovertemplate="i = %{x}<br>σ = %{y:.4g}<extra></extra>"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=e[pick], mode="lines", name="energy", line={"color": colours.MECHANISMS["lowrank"]},
                             hovertemplate="top %{x}: %{y:.2%} of ||P||²<extra></extra>"), 1, 2)
    for level in LEVELS:
        fig.add_hline(y=level, line={"dash": "dot", "color": "grey", "width": 1}, row=1, col=2)
        if ranks.get(level) is not None:
            _mark_rank(fig, ranks[level], level, len(s))
    if chosen is not None:
        for col in (1, 2):
            fig.add_vline(x=chosen, line={"dash": "dot", "color": "black", "width": 1}, row=1, col=col)
    fig.update_xaxes(common.log_axis([1, max(len(s), 1)], counts=True), title="index i (rank k)")
    fig.update_yaxes(common.log_axis(s[pick]), title="σ_i", row=1, col=1)
    fig.update_yaxes(title="share of energy", range=[0, 1.02], row=1, col=2)
    fig.update_layout(title=title, height=height, showlegend=False, margin={"l": 50, "r": 10, "t": 60, "b": 40})
    return fig


def error_curves_chart(ks: list[int], output_error: dict[str, list[float]], weight_error: dict[str, list[float]],
                       chosen: int | None = None, height: int = 380) -> go.Figure:
    """Relative output error and relative Frobenius error of the weights against k, one line per method (log-log)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("output: ||O_k − O||_F / ||O||_F", "weights: ||W_k − P||_F / ||P||_F"))
    shown = []
    for col, errors in ((1, output_error), (2, weight_error)):
        for method, ys in errors.items():
            y = np.clip(np.asarray(ys, dtype=float), 1e-8, None)  # a log axis cannot show an exact 0
            shown.append(y)
            name = METHOD.text_of(method)
            fig.add_trace(go.Scatter(x=ks, y=y, mode="lines+markers", name=name, legendgroup=method,
                                     showlegend=col == 1, line={"color": METHOD_COLOURS.get(method)},
                                     hovertemplate=f"{name}<br>k = %{{x}}<br>error %{{y:.4g}}<extra></extra>"),
                          1, col)
        fig.add_hline(y=1.0, line={"dash": "dot", "color": "grey", "width": 1}, row=1, col=col)
        if chosen is not None:
            fig.add_vline(x=chosen, line={"dash": "dot", "color": "black", "width": 1}, row=1, col=col)
    fig.update_xaxes(common.log_axis(ks, counts=True), title="k (rank, rows, landmarks)")
    fig.update_yaxes(common.log_axis(np.concatenate([*shown, [1.0]])), title="relative error")
    fig.update_layout(height=height, margin={"l": 50, "r": 10, "t": 60, "b": 40})
    return common.legend_below(fig)


def weight_rows(dense_row, mech_row, tokens: list[str], name: str, query: int, height: int = 320) -> go.Figure:
    """One query's weights over the whole text, dense and the mechanism's (signed), with a zero line."""
    fig = common.along_text({"dense": dense_row, name: mech_row}, tokens, y_title="weight", height=height,
                            title=f"Query {query}: weight on every key", marks=[query],
                            colour={name: colours.MECHANISMS["lowrank"]})
    fig.add_hline(y=0.0, line={"color": "black", "width": 1})
    return fig


def segment_strip(edges: list[int], tokens: list[str], name: str) -> go.Figure:
    """Which segment (landmark, pooled projection row) each token falls in, as a strip over the text."""
    n = edges[-1]
    ids = np.zeros(n, dtype=int)
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        ids[a:b] = i
    return common.strips(ids[None, :], tokens, [name], colorscale="Turbo")
