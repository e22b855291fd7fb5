"""Charts of the Needle page: the answer's probability against where the fact sits (Liu et al.'s
lost-in-the-middle curve, one line per mechanism, a windowed mechanism's window edge marked), and the
answer's probability with the top retrieval heads switched off against as many random heads (Wu et
al.'s ablation). The retrieval heads' grid is the model view's (figures.model_view.head_grid)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.analysis.needle_probe import NeedleProbe
from explorer.figures import colours, common
from explorer.mechanisms import DENSE

MARGIN = {"l": 60, "r": 20, "t": 50, "b": 40}


def position_chart(probes: dict[str, NeedleProbe], height: int = 440) -> go.Figure:
    """Answer probability against the fact's relative position, one line per mechanism key (DENSE for
    the model's own attention); a dotted line in a mechanism's colour where the fact enters its window."""
    fig = go.Figure()
    shapes, notes = [], []
    for name, colour in colours.series_colours(colours.dense_last(probes)).items():
        probe, shown = probes[name], colours.title_of(name)
        fig.add_trace(go.Scatter(
            x=probe.positions * 100, y=probe.answer_prob, name=shown, mode="lines+markers",
            line={"color": colour, "width": 2.5 if name == DENSE else 2}, marker={"size": 7},
            customdata=np.stack([probe.token_positions, probe.answer_rank], 1),
            hovertemplate=shown + "<br>fact at %{x:.0f}% of the text (token %{customdata[0]:,})<br>answer "
                          "probability %{y:.3f}<br>first token's rank %{customdata[1]}<extra></extra>"))
        edge = probe.window_edge
        if edge is not None:
            shapes.append(common.vertical(edge * 100, {"color": colour, "width": 2, "dash": "dot"}))
            notes.append({"x": edge * 100, "y": 1, "yref": "paper", "xanchor": "right", "yanchor": "top",
                          "text": f"{shown}: window from here", "showarrow": False,
                          "font": {"color": colour, "size": 11}})
    common.add_lines(fig, shapes)
    fig.update_layout(title="Answer probability against where the fact sits", height=height, margin=MARGIN,
                      annotations=notes, hovermode="closest")
    fig.update_xaxes(title_text="the fact's position in the text (%: 0 its start, 100 just before the question)",
                     range=[-3, 103])
    fig.update_yaxes(title_text="probability of the whole answer", range=[-0.03, 1.03])
    return common.legend_below(fig)


def ablation_chart(frame: pd.DataFrame, intact: float, height: int = 420) -> go.Figure:
    """The answer's probability with heads switched off against k: the top k retrieval heads (a line),
    k random heads (the range over draws shaded, their median a line), the intact model dashed.
    frame: k, heads ("top" or "random"), draw, answer_prob."""
    top = frame[frame.heads == "top"].sort_values("k")
    rand = frame[frame.heads == "random"].groupby("k").answer_prob.agg(["min", "median", "max", "count"]).reset_index()
    hit, other = colours.MISSED, colours.CAUGHT
    fig = go.Figure()
    if not rand.empty:
        fig.add_trace(common.shaded(rand.k, rand["max"], rand["min"], other, showlegend=True,
                                  name="random heads: range over draws"))
        fig.add_trace(go.Scatter(x=rand.k, y=rand["median"], mode="lines+markers", name="k random heads off (median)",
                                 line={"color": other, "width": 2}, marker={"size": 7},
                                 customdata=rand[["min", "max", "count"]].to_numpy(),
                                 hovertemplate="k = %{x}: %{customdata[2]} draws of k random heads<br>median "
                                               "%{y:.3f}, range %{customdata[0]:.3f} – %{customdata[1]:.3f}"
                                               "<extra></extra>"))
    fig.add_trace(go.Scatter(x=top.k, y=top.answer_prob, mode="lines+markers", name="top k retrieval heads off",
                             line={"color": hit, "width": 2.5}, marker={"size": 8, "symbol": "x"},
                             hovertemplate="top %{x} retrieval heads off<br>answer probability %{y:.3f}"
                                           "<extra></extra>"))
    fig.add_hline(y=intact, line={"color": colours.NEUTRAL, "dash": "dash", "width": 1.5})
    fig.add_annotation(x=1, xref="paper", xanchor="right", y=intact, yanchor="bottom", showarrow=False,
                       text=f"no head off: {intact:.3f}", font={"color": colours.NEUTRAL, "size": 11})
    ks = sorted(frame.k.unique())
    fig.update_layout(title="Answer probability with heads switched off", height=height, margin=MARGIN)
    fig.update_xaxes(type="log", tickvals=ks, ticktext=[str(k) for k in ks], title_text="heads switched off (k, log)")
    fig.update_yaxes(title_text="probability of the whole answer", range=[-0.03, 1.03])
    return common.legend_below(fig)


def corpus_chart(curves: pd.DataFrame, model: str, height: int = 400) -> go.Figure:
    """A sweep's needle table for one model (analysis.needle_corpus.curves): per mechanism the median
    answer probability over documents against the fact's position, the lowest to the highest shaded."""
    rows = curves[curves.model == model]
    fig = go.Figure()
    names = list(dict.fromkeys(rows.shown))
    keys = dict(zip(rows.shown, rows.mechanism))
    for name in colours.dense_last(names):
        line = rows[rows.shown == name].sort_values("position")
        colour = colours.colour_of(keys[name]) or colours.NEUTRAL
        x = line.position.to_numpy() * 100
        fig.add_trace(common.shaded(x, line.high, line.low, colour, legendgroup=name))
        fig.add_trace(go.Scatter(
            x=x, y=line["median"], mode="lines+markers", name=name, legendgroup=name, marker={"size": 7},
            line={"color": colour, "width": 2.5 if keys[name] == DENSE else 2},
            customdata=line[["low", "high", "documents"]].to_numpy(),
            hovertemplate=name + "<br>fact at %{x:.0f}%<br>median %{y:.3f} over %{customdata[2]} documents"
                                 "<br>lowest %{customdata[0]:.3f}, highest %{customdata[1]:.3f}<extra></extra>"))
    fig.update_layout(title="Answer probability against where the fact sits", height=height, margin=MARGIN)
    fig.update_xaxes(title_text="the fact's position in the text (%)", range=[-3, 103])
    fig.update_yaxes(title_text="probability of the whole answer", range=[-0.03, 1.03])
    return common.legend_below(fig)
