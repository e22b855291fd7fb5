"""Charts of the relative-position page: bias against distance per head, the
bias beside the attention it shapes (measured by distance), and RoPE's decay.

Data in (tensors from explorer.mechanisms.relpos), plotly figures out. The
bias map is explorer.figures.common.pooled_heatmap with the bias's own label.
"""
from __future__ import annotations

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.figures import colours, common
from explorer.figures.common import as_array

MARGIN = {"l": 60, "r": 60, "t": 40, "b": 40}
BIAS = "bias added to the score"


def bias_map(pooled, tokens: list[str], title: str = "") -> go.Figure:
    """The position term over a window of query and key positions (a pooled map of the bias,
    explorer.analysis.relpos.bias_map): red lowers a score, blue raises it, zero is white."""
    return common.pooled_heatmap(pooled.mean[0], tokens, pooled.row_edges, pooled.col_edges, title=title,
                                 diverging=True, label=BIAS)


def bias_by_distance(distances, bias, highlight: int | None = None, buckets=None,
                     title: str = "Bias against distance", height: int = 360) -> go.Figure:
    """One line per head of the position term against signed distance (key - query).

    highlight: the head drawn bold (the page's head); buckets: T5 bucket of
    each distance, shown on hover. Heads take a sequential scale in head order
    (ALiBi's slopes fall with the head number; a qualitative palette runs out at 12 heads).
    """
    x, b = as_array(distances), as_array(bias)
    extra = "" if buckets is None else "<br>bucket %{customdata}"
    hues = plotly.colors.sample_colorscale(common.SEQUENTIAL, max(b.shape[0], 2))
    fig = go.Figure()
    for h in range(b.shape[0]):
        bold = h == highlight
        fig.add_trace(go.Scatter(
            x=x, y=b[h], mode="lines", name=f"head {h}", customdata=None if buckets is None else as_array(buckets).astype(int),
            line={"width": 3 if bold else 1, "color": hues[h]}, opacity=1.0 if bold or highlight is None else 0.45,
            hovertemplate=f"head {h}<br>distance %{{x}}<br>bias %{{y:.4g}}{extra}<extra></extra>"))
    fig.add_vline(x=0, line={"width": 1, "dash": "dot", "color": "grey"})
    fig.update_layout(title=title, height=height, margin=MARGIN, xaxis_title="distance (key − query)",
                      yaxis_title=BIAS)
    return common.legend_below(fig)


def _band_centres(edges) -> np.ndarray:
    e = as_array(edges)
    return np.sqrt((e[:-1] + 1) * e[1:])  # geometric middle of [lo, hi) on the 1 + |d| axis


def bias_and_attention(distances, bias_row, measured: dict, causal: bool = False,
                       title: str = "Bias and attention against distance", height: int = 400) -> go.Figure:
    """The chosen head's bias (left axis) overlaid with measured attention by |distance| (right, log).

    distances/bias_row: signed curve of one head; measured: name -> dict from
    relpos.attention_by_distance (edges, mean [1, B]), named "dense" and "relpos"
    to take those mechanisms' titles and colours. The x axis is 1 + |distance| on
    a log scale, so token neighbours and far context both show.
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x, b = as_array(distances), as_array(bias_row)
    sides = [("keys before", x <= 0)] if causal else [("keys before", x <= 0), ("keys after", x >= 0)]
    for name, keep in sides:
        order = np.argsort(np.abs(x[keep]))
        fig.add_trace(go.Scatter(x=1 + np.abs(x[keep])[order], y=b[keep][order], mode="lines",
                                 name=f"bias, {name}", line={"color": "black",
                                                             "dash": "solid" if "before" in name else "dash"},
                                 hovertemplate="|distance| %{customdata}<br>bias %{y:.4g}<extra></extra>",
                                 customdata=np.abs(x[keep])[order].astype(int)), secondary_y=False)
    weights, reach = [], [1 + np.abs(x)]
    hues = colours.series_colours(measured)
    for name, m in measured.items():
        e = as_array(m["edges"]).astype(int)
        spans = [f"{a}" if c - a == 1 else f"{a}–{c - 1}" for a, c in zip(e[:-1], e[1:])]
        mean = as_array(m["mean"])[0]
        keep = as_array(m["pairs"]) > 0
        weights.append(mean[keep])
        reach.append(_band_centres(e)[keep])
        fig.add_trace(go.Scatter(x=_band_centres(e)[keep], y=mean[keep], mode="lines+markers",
                                 name=colours.title_of(name),
                                 marker={"size": 4}, customdata=np.array(spans)[keep], line={"color": hues[name]},
                                 hovertemplate="|distance| %{customdata}<br>mean weight %{y:.3g}<extra></extra>"),
                      secondary_y=True)
    fig.update_xaxes(common.log_axis(np.concatenate(reach), counts=True), title_text="1 + |distance| (log)")
    fig.update_yaxes(title_text=BIAS, secondary_y=False)
    fig.update_yaxes(common.log_axis(np.concatenate([[], *weights])), title_text="mean attention weight (log)",
                     secondary_y=True)
    fig.update_layout(title=title, height=height, margin=MARGIN)
    return common.legend_below(fig)


def rope_decay(decay: dict, head: int = 0, title: str = "RoPE: mean score against distance",
               height: int = 360) -> go.Figure:
    """Mean q.k / sqrt(d) with and without the rotation (left) and RoFormer's bound (right)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x = as_array(decay["distances"])
    for name, key, hue in (("with RoPE", "rope", colours.MECHANISMS["relpos"]),
                           ("without (content only)", "plain", colours.NEUTRAL)):
        fig.add_trace(go.Scatter(x=x, y=as_array(decay[key])[head], mode="lines", name=name, line={"color": hue},
                                 hovertemplate="distance %{x}<br>mean score %{y:.4g}<extra></extra>"),
                      secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=as_array(decay["bound"]), mode="lines", name="RoFormer bound (content-free)",
                             line={"dash": "dot", "color": "grey"},
                             hovertemplate="distance %{x}<br>bound %{y:.3g}<extra></extra>"), secondary_y=True)
    fig.update_xaxes(title_text="distance (key − query)")
    fig.update_yaxes(title_text="mean scaled score", secondary_y=False)
    fig.update_yaxes(title_text="relative upper bound", secondary_y=True)
    fig.update_layout(title=title, height=height, margin=MARGIN)
    return common.legend_below(fig)
