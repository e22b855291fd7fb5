"""Charts of the score-dilution page: a statistic against prefix length (median line
and interquartile band per curve, theory lines beside), and the planted needle's
weight against n. Data in (explorer.analysis.dilution results), plotly figures out.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.analysis.dilution import DENSE, LABELS, Curves, Needle
from explorer.figures import colours, common

MARGIN = {"l": 60, "r": 10, "t": 40, "b": 40}
THEORY_DASHES = ("dash", "dot", "dashdot", "longdash")


def _theory_lines(fig: go.Figure, x, theory: dict[str, np.ndarray]) -> None:
    for i, (name, y) in enumerate(theory.items()):
        fig.add_trace(go.Scatter(x=x, y=np.asarray(y, dtype=float), name=name, mode="lines",
                                 line={"color": "grey", "width": 1.5, "dash": THEORY_DASHES[i % len(THEORY_DASHES)]},
                                 hovertemplate=name + "<br>n %{x}<br>%{y:.4g}<extra></extra>"))


def _y_axis(values: list, log: bool) -> dict:
    """A log axis fitted to every value drawn (ticks at powers of ten), or a linear one."""
    return common.log_axis(np.concatenate([np.ravel(v) for v in values])) if log else {"type": "linear"}


def band_chart(curves: Curves, metric: str, theory: dict[str, dict[str, np.ndarray]] | None = None,
               log_y: bool = False, title: str = "", height: int = 440) -> go.Figure:
    """One statistic against prefix length on a log x axis: per curve the median over the
    sampled queries as a line and the 25-75% band shaded; theory lines dashed grey."""
    x = np.asarray(curves.lengths)
    label = LABELS[metric].replace("top-k", f"top-{curves.topk}")
    fig = go.Figure()
    for name, colour in colours.series_colours(curves.bands).items():
        band, shown = curves.bands[name][metric], colours.title_of(name)
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([band[:, 2], band[:, 0][::-1]]),
                                 fill="toself", fillcolor=colours.fill(colour), line={"width": 0}, hoverinfo="skip",
                                 showlegend=False, legendgroup=name, name=f"{shown} 25-75%"))
        fig.add_trace(go.Scatter(
            x=x, y=band[:, 1], name=shown, mode="lines+markers", legendgroup=name, marker={"size": 5},
            line={"color": colour, "width": 2.5 if name == DENSE else 2}, customdata=band[:, [0, 2]],
            hovertemplate=shown + "<br>prefix %{x} tokens<br>median %{y:.4g}<br>"
                          "25-75%: %{customdata[0]:.4g} – %{customdata[1]:.4g}<extra></extra>"))
    _theory_lines(fig, x, {name: rows[metric] for name, rows in (theory or {}).items()})
    fig.update_layout(title=title or f"{label} against prefix length", height=height, margin=MARGIN,
                      hovermode="closest")
    fig.update_xaxes(common.log_axis(x, counts=True), title_text="prefix length (tokens, log)")
    bands = [b[metric] for b in curves.bands.values()] + [rows[metric] for rows in (theory or {}).values()]
    fig.update_yaxes(_y_axis(bands, log_y), title_text=label + (" (log)" if log_y else ""))
    return common.legend_below(fig)


def needle_chart(needle: Needle, log_y: bool = False, height: int = 440) -> go.Figure:
    """The needle query's weight on its key against n (mean over heads), theory dashed.

    Hollow markers: the mechanism cannot reach the needle key at that n (in any head).
    """
    x = np.asarray(needle.lengths)
    fig = go.Figure()
    shown = []
    for name, colour in colours.series_colours(needle.weight).items():
        w = needle.weight[name].mean(1)
        reach = needle.reach[name].any(1)
        shown.append(np.abs(w) if log_y else w)
        fig.add_trace(go.Scatter(
            x=x, y=shown[-1], name=colours.title_of(name), mode="lines+markers",
            line={"color": colour, "width": 2.5 if name == DENSE else 2},
            marker={"size": 8, "symbol": np.where(reach, "circle", "circle-open").tolist()},
            customdata=np.stack([w, reach.astype(float)], 1),
            hovertemplate=colours.title_of(name) + "<br>n %{x}<br>needle weight %{customdata[0]:.4g}"
                                 "<br>reachable: %{customdata[1]:.0f}<extra></extra>"))
    theory = needle.theory()
    _theory_lines(fig, x, theory)
    fig.update_layout(title=f"Needle weight against n (margin {needle.margin:g}, noise {needle.noise:g})",
                      height=height, margin=MARGIN)
    fig.update_xaxes(common.log_axis(x, counts=True), title_text="sequence length n (log)")
    fig.update_yaxes(_y_axis(shown + list(theory.values()), log_y),
                     title_text="|weight| on the needle key (log)" if log_y else "weight on the needle key")
    return common.legend_below(fig)
