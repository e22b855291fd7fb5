"""Charts of the page "Inside the model": the loss each mechanism adds along the text, and the
perplexity with the mechanism in one layer at a time."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from explorer.figures import colours
from explorer.figures.common import legend_below, pool_series


def _around(text: str, offsets: list[tuple[int, int]], at: int, chars: int = 40) -> str:
    """The token at `at` in brackets with the words around it, escaped, on one line (a hover label)."""
    start, stop = offsets[at]
    clean = lambda s: html.escape(" ".join(s.split()))  # noqa: E731 - one line per hover
    return f"…{clean(text[max(0, start - chars) : start])} [{clean(text[start:stop])}] {clean(text[stop : stop + chars // 2])}…"


def loss_along(gaps: dict[str, np.ndarray], text: str, offsets: list[tuple[int, int]], window: int,
               colour: dict[str, str], points: int = 2000) -> go.Figure:
    """One line per mechanism: the loss it adds per predicted token (a rolling mean over `window`),
    pooled to at most `points` bins; a point's hover shows the token it ends at and its context.
    gaps: label -> [n - 1] values for the text's tokens 1..n-1 (offsets covers tokens 0..n-1)."""
    fig = go.Figure()
    for name, gap in gaps.items():
        _, mean, _, _, edges = pool_series(gap, points)
        last = edges[1:]  # a bin of predictions [a, b) ends at the prediction of token b (they start at token 1)
        fig.add_trace(go.Scatter(x=last, y=mean, name=name, mode="lines", line={"color": colour.get(name)},
                                 text=[_around(text, offsets, b) for b in last],
                                 hovertemplate="token %{x:,}<br>%{text}<br>" + html.escape(name)
                                 + ": %{y:+.3f} nats<extra></extra>"))
    fig.add_hline(y=0, line={"color": colours.NEUTRAL, "width": 1, "dash": "dot"})
    fig.update_layout(height=340, xaxis_title="token position (the token predicted)",
                      yaxis_title=f"added loss, nats (mean of {window})", margin={"l": 60, "r": 10, "t": 30, "b": 40},
                      showlegend=True, hovermode="closest")
    return legend_below(fig)


def by_layer(curves: dict[str, tuple[list[int], list[float]]], dense: float, colour: dict[str, str]) -> go.Figure:
    """Perplexity with each mechanism in one layer at a time (label -> (layers, perplexities)), beside
    the model's own (a dotted line): the layers where a mechanism costs the most stand out."""
    fig = go.Figure()
    for name, (layers, values) in curves.items():
        fig.add_trace(go.Scatter(x=layers, y=values, name=name, mode="lines+markers", line={"color": colour.get(name)},
                                 hovertemplate="layer %{x}<br>perplexity %{y:.2f}<extra>" + html.escape(name)
                                 + "</extra>"))
    fig.add_hline(y=dense, line={"color": colours.NEUTRAL, "width": 1, "dash": "dot"},
                  annotation_text=f"dense {dense:.2f}", annotation_position="top left")
    fig.update_layout(height=320, xaxis_title="the one layer swapped", yaxis_title="perplexity",
                      margin={"l": 60, "r": 10, "t": 30, "b": 40}, showlegend=True)
    return legend_below(fig)
