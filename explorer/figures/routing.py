"""Charts of the routing page: routing probabilities along the text, path usage,
k-means cluster balance and centroid similarity, and the router fit's loss curve.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

from explorer.core.pooling import bins
from explorer.figures import colours, common
from explorer.figures.common import as_array

MARGIN = {"l": 50, "r": 10, "t": 40, "b": 40}


def route_per_token(route, names: list[str], tokens: list[str], start: int, stop: int,
                    focus: int | None = None) -> go.Figure:
    """Routing probabilities of each token in [start, stop) as stacked bars (one bar per token);
    a path that is a mechanism takes its title and colour."""
    r = as_array(route)[start:stop]
    x = list(range(start, stop))
    labels = [f"{i} │ {tokens[i]}" for i in x]
    hues = colours.series_colours(names)
    fig = go.Figure([go.Bar(x=x, y=r[:, p], name=colours.title_of(name), customdata=labels, marker_color=hues[name],
                            hovertemplate="%{customdata}<br>" + colours.title_of(name) + " %{y:.3f}<extra></extra>")
                     for p, name in enumerate(names)])
    if focus is not None and start <= focus < stop:
        fig.add_vline(x=focus, line={"width": 2, "color": "black", "dash": "dot"})
    fig.update_layout(barmode="stack", height=300, margin=MARGIN, xaxis_title="token position",
                      yaxis_title="routing probability", bargap=0.05)
    return common.legend_below(fig)


def path_usage(usage, names: list[str], flops: dict[str, float], dense_flops: float) -> go.Figure:
    """Mean routing probability of each path, labelled with what the path costs relative to dense."""
    u = as_array(usage)
    rel = [flops[name] / dense_flops for name in names]
    hues = colours.series_colours(names)
    fig = go.Figure(go.Bar(y=[colours.title_of(name) for name in names], x=u, orientation="h",
                           marker_color=[hues[name] for name in names], text=[f"{r:.2g}× dense flops" for r in rel],
                           textposition="auto", customdata=rel,
                           hovertemplate="%{y}<br>mean probability %{x:.3f}<br>%{customdata:.3g}× dense flops"
                                         "<extra></extra>"))
    fig.update_layout(height=320, margin={**MARGIN, "l": 90}, xaxis={"title": "mean routing probability",
                      "rangemode": "tozero"}, yaxis={"autorange": "reversed", "automargin": True})
    return fig


def cluster_balance(natural_sizes, width: int) -> go.Figure:
    """Queries + keys nearest to each centroid (k-means' own clusters), largest first,
    against the 2w tokens a balanced cluster takes."""
    sizes = np.sort(as_array(natural_sizes))[::-1]
    fig = go.Figure(go.Bar(x=np.arange(len(sizes)), y=sizes, name="nearest to the centroid",
                           marker_color=colours.MECHANISMS["routing"],
                           hovertemplate="rank %{x}<br>%{y:.0f} tokens<extra></extra>"))
    fig.add_hline(y=2 * width, line={"dash": "dash", "color": colours.NEUTRAL},
                  annotation_text=f"balanced: {width} queries + {width} keys", annotation_position="top right",
                  annotation_bgcolor="rgba(255,255,255,0.7)")
    fig.update_layout(height=300, margin=MARGIN, xaxis_title="cluster (by size)",
                      yaxis_title="queries + keys", showlegend=False)
    return fig


def routes_histogram(query_routes, key_routes) -> go.Figure:
    """How many clusters each query and key was routed to (0: left out of the attention)."""
    fig = go.Figure()
    for (name, counts), colour in zip((("queries", query_routes), ("keys", key_routes)), colours.SERIES):
        c = as_array(counts).astype(int)
        hist = np.bincount(c, minlength=1)
        fig.add_trace(go.Bar(x=np.arange(len(hist)), y=hist, name=name, marker_color=colour,
                             hovertemplate="%{y} " + name + " in %{x} cluster(s)<extra></extra>"))
    fig.update_layout(barmode="group", height=300, margin=MARGIN, xaxis_title="clusters a token is routed to",
                      yaxis_title="tokens", xaxis={"dtick": 1})
    return common.legend_below(fig)


def centroid_similarity(sim, grid: int = 160) -> go.Figure:
    """Cosine similarity between centroids; more than `grid` clusters are mean-pooled."""
    s = torch.as_tensor(as_array(sim), dtype=torch.float32)
    c = s.shape[0]
    index, count = bins(0, c, grid)
    pooled = torch.zeros(count, c).index_add_(0, index, s)
    pooled = torch.zeros(count, count).index_add_(1, index, pooled)
    size = torch.bincount(index, minlength=count).float()
    pooled = pooled / (size[:, None] * size[None, :])
    fig = go.Figure(go.Heatmap(z=pooled.numpy(), colorscale="RdBu", zmid=0, zmin=-1, zmax=1,
                               hovertemplate="clusters %{y} / %{x}<br>cosine %{z:.3f}<extra></extra>"))
    note = "" if count == c else f" ({c} clusters pooled to {count})"
    fig.update_layout(title="Centroid similarity" + note, height=340, margin=MARGIN,
                      xaxis_title="cluster", yaxis={"title": "cluster", "autorange": "reversed"})
    return fig


def loss_curve(losses: list[float], seconds: float) -> go.Figure:
    """The router fit: relative squared error against dense at every Adam step."""
    fig = go.Figure(go.Scatter(x=np.arange(len(losses)), y=losses, mode="lines",
                               line={"color": colours.MECHANISMS["routing"]},
                               hovertemplate="step %{x}<br>loss %{y:.4g}<extra></extra>"))
    fig.update_layout(title=f"Router fit: {losses[0]:.4g} → {losses[-1]:.4g} in {seconds:.1f} s", height=300,
                      margin=MARGIN, xaxis_title="Adam step",
                      yaxis={"title": "relative squared error", **common.log_axis(losses)})
    return fig
