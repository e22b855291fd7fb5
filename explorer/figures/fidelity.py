"""Fidelity against dense along the text: one panel per measure, each mechanism's mean over runs of
neighbouring measured queries drawn over a faint band of their spread. Per query the measures jump
(top-8 recall moves in steps of 1/8); drawn raw, two or three series over thousands of queries
hide one another, where their local means stay apart."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.analysis.fidelity import Fidelity
from explorer.figures import colours, common

MEASURES = {"tv": "total variation", "recall": "top-8 recall", "reach_mass": "reachable dense mass"}
POINTS = 120  # bins of neighbouring measured queries along the text: a line's points
BAND = (10, 90)  # the percentiles of a bin's queries its band spans


def binned(values, points: int = POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cuts, mean, low, high): `values` cut into at most `points` runs of neighbours (cuts, indices
    into values), each run's mean and its BAND percentiles."""
    values = common.as_array(values)
    cuts = np.unique(np.linspace(0, len(values), min(points, len(values)) + 1).round().astype(int))
    runs = [values[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    low, high = (np.array([np.percentile(r, q) for r in runs]) for q in BAND)
    return cuts, np.array([r.mean() for r in runs]), low, high


def along_text(fids: dict[str, Fidelity], tokens: list[str], title: str = "Fidelity along the text",
               points: int = POINTS, panel_height: int = 150) -> go.Figure:
    """Each MEASURES entry in a panel of its own (x shared), a line per mechanism (fids: name ->
    its Fidelity of one head) at the mean of each run of neighbouring queries, a faint band from
    their 10th to 90th percentile (none where a run is one query)."""
    hues = colours.series_colours(fids)
    fig = make_subplots(rows=len(MEASURES), cols=1, shared_xaxes=True, vertical_spacing=0.16,
                        subplot_titles=list(MEASURES.values()))
    for row, measure in enumerate(MEASURES, start=1):
        for name, fid in fids.items():
            _add(fig, row, getattr(fid, measure)[0], common.as_array(fid.rows, dtype=int), tokens, name,
                 hues[name], points, legend=row == 1)
        fig.update_yaxes(rangemode="tozero", row=row, col=1)
    fig.update_xaxes(title_text="token position", row=len(MEASURES), col=1)
    fig.update_layout(title=title, height=90 + panel_height * len(MEASURES), showlegend=len(fids) > 1,
                      margin={"l": 50, "r": 10, "t": 60, "b": 40}, hovermode="closest")
    return common.legend_below(fig)


def _add(fig: go.Figure, row: int, values, positions: np.ndarray, tokens: list[str], name: str, hue: str,
         points: int, legend: bool) -> None:
    """One mechanism's band and line in one panel; hover names each run's tokens and its values."""
    cuts, mean, low, high = binned(values, points)
    edges = [int(positions[c]) for c in cuts[:-1]] + [len(tokens)]
    x = np.array([positions[a:b].mean() for a, b in zip(cuts[:-1], cuts[1:])])
    shown = colours.title_of(name)
    if (np.diff(cuts) > 1).any():
        fig.add_trace(common.shaded(x, high, low, hue, 0.15, legendgroup=name, name=f"{shown} spread"), row, 1)
    spread = np.stack([low, high, np.diff(cuts)], axis=-1)
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=shown, legendgroup=name, showlegend=legend,
                             line={"color": hue, "width": 2}, text=common.bin_labels(tokens, edges), customdata=spread,
                             hovertemplate="%{text}<br>" + shown + ": mean %{y:.3f} over %{customdata[2]} queries, "
                             "10th–90th percentile %{customdata[0]:.3f}–%{customdata[1]:.3f}<extra></extra>"), row, 1)
