"""Charts of a corpus sweep (explorer.analysis.corpus): the share of documents where each head is
a sink, fidelity per mechanism as boxes, normalised entropy against the lengths each text was measured at.
Names from the sweep (documents, models, parameters) are escaped: plotly reads tags in hover text."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.analysis.corpus import FIDELITY, LABELS, SinkGrid
from explorer.core.bundled import short_name
from explorer.figures import colours, common

CELL = 22  # pixels per layer of a sink grid
LOG_FROM = 1.0  # decades an error measure spans before its axis turns logarithmic
ERRORS = ("output_rel_error", "total_variation")  # measures that may span decades (recall stays 0..1)
TICKED_LENGTHS = 8  # lengths measured, at most, that each get a tick of their own
NAMED_DOCUMENTS = 8  # documents, at most, that each get a marker and a legend entry on the entropy chart
DOCUMENT_SYMBOLS = tuple(f"{s}-open" for s in ("circle", "square", "diamond", "triangle-up", "x", "triangle-down",
                                                "star", "cross"))  # one per named document


def _plain(name: str) -> str:
    """A name from the sweep as plotly shows it: its tags as text, never markup."""
    return html.escape(name, quote=False)


def model_colours(models) -> dict[str, str]:
    """One Okabe-Ito colour per model, in the order given, the same on every chart of the page."""
    models = list(models)
    return dict(zip(models, colours.cycle(len(models))))


def sink_share_map(grid: SinkGrid) -> go.Figure:
    """Layer x head: the share of documents (0-100 %) where the head gives the first token more
    than THRESHOLD of each query's attention; the hover counts the documents."""
    share = grid.share * 100
    counts = np.stack([grid.sinks, grid.documents], axis=-1)
    fig = go.Figure(go.Heatmap(
        z=share, x=grid.heads, y=grid.layers, zmin=0, zmax=100, colorscale=common.SEQUENTIAL, customdata=counts,
        colorbar={"title": {"text": "documents<br>with a sink", "side": "right"}, "ticksuffix": " %"},
        hovertemplate="layer %{y}, head %{x}<br>a sink in %{customdata[0]} of %{customdata[1]} documents "
                      "(%{z:.0f} %)<extra></extra>", xgap=1, ygap=1))
    overall = np.nanmean(grid.share) if grid.documents.any() else 0.0
    # the title sits on the grid, below the band the chart's toolbar takes on hover (a column's width
    # is too narrow for both on one line)
    title = {"text": f"{_plain(short_name(grid.model))}: {overall:.0%} of heads × documents have a sink",
             "yref": "paper", "y": 1, "yanchor": "bottom", "pad": {"b": 8}}
    fig.update_layout(title=title, height=140 + CELL * len(grid.layers), margin={"l": 60, "r": 10, "t": 80, "b": 50})
    fig.update_xaxes(title_text="head", tickmode="array", tickvals=grid.heads, constrain="domain")
    fig.update_yaxes(title_text="layer", autorange="reversed", tickmode="array",
                     tickvals=grid.layers[:: max(1, len(grid.layers) // 15)])
    return fig


def fidelity_boxes(summary: pd.DataFrame, models: dict[str, str] | None = None) -> go.Figure:
    """One panel per fidelity measure, a box per mechanism and model from explorer.analysis.corpus
    .fidelity_summary: the box from the 25th to the 75th percentile over documents and heads, the
    whiskers from the 10th to the 90th. An error measure spanning LOG_FROM decades gets a log axis."""
    if summary.empty:
        raise ValueError("the sweep has no mechanism besides dense to compare")
    shown = list(dict.fromkeys(summary.index.get_level_values("shown")))[::-1]  # first mechanism on top
    present = list(dict.fromkeys(summary.index.get_level_values("model")))
    models = {m: (models or model_colours(present))[m] for m in present}
    fig = make_subplots(rows=1, cols=len(FIDELITY), subplot_titles=[LABELS[m] for m in FIDELITY],
                        shared_yaxes=True, horizontal_spacing=0.05)
    for c, measure in enumerate(FIDELITY, start=1):
        for trace in _boxes(summary, measure, shown, models, legend=c == 1):
            fig.add_trace(trace, 1, c)
        values = summary[[f"{measure} {q}" for q in ("p10", "p90")]].to_numpy()
        positive = values[values > 0]
        if measure in ERRORS and positive.size and np.log10(positive.max() / positive.min()) >= LOG_FROM:
            fig.update_xaxes(common.log_axis(positive), row=1, col=c)
        else:
            fig.update_xaxes(range=[0, 1.02] if measure == "topk_recall" else None, rangemode="tozero", row=1, col=c)
    fig.update_layout(boxmode="group", height=140 + 40 * len(shown) * max(1, len(models)),
                      margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return common.legend_below(fig)


def _boxes(summary: pd.DataFrame, measure: str, shown: list[str], models: dict[str, str], legend: bool):
    """One horizontal box trace per model over the mechanisms `shown`, from the summary's columns
    "<measure> <quantile>": the box the middle half, the whiskers the 10th to the 90th percentile."""
    for model, colour in models.items():
        part = summary.xs(model, level="model").reindex(shown).dropna(subset=["measured"])
        col = {q: part[f"{measure} {q}"].to_numpy() for q in ("p10", "p25", "median", "p75", "p90")}
        yield go.Box(y=[_plain(s) for s in part.index], q1=col["p25"], median=col["median"], q3=col["p75"],
                     lowerfence=col["p10"], upperfence=col["p90"], orientation="h", name=_plain(short_name(model)),
                     legendgroup=model, showlegend=legend, marker={"color": colour}, line={"width": 1.5},
                     hovertemplate="%{y}<br>median %{median:.3g}, middle half %{q1:.3g} to %{q3:.3g}, "
                                   "10th to 90th percentile %{lowerfence:.3g} to %{upperfence:.3g}<extra>"
                                   + _plain(short_name(model)) + "</extra>")


def in_model_boxes(summary: pd.DataFrame, models: dict[str, str] | None = None) -> go.Figure:
    """A box per mechanism and model from explorer.analysis.corpus.in_model_summary: the model's perplexity
    with the mechanism in its layers over its own, across documents and lengths, on a log axis (1 = no
    loss; a mechanism that breaks the model lies decades away)."""
    shown = list(dict.fromkeys(summary.index.get_level_values("shown")))[::-1]
    present = list(dict.fromkeys(summary.index.get_level_values("model")))
    models = {m: (models or {}).get(m) or model_colours(present)[m] for m in present}
    fig = go.Figure(list(_boxes(summary, "times_dense", shown, models, legend=True)))
    values = summary[["times_dense p10", "times_dense p90"]].to_numpy()
    fig.add_vline(x=1, line={"color": colours.NEUTRAL, "width": 1, "dash": "dot"})
    fig.update_xaxes(common.log_axis(np.append(values[values > 0], 1.0)), title_text="perplexity × the model's own")
    fig.update_layout(boxmode="group", height=140 + 40 * len(shown) * max(1, len(models)),
                      margin={"l": 60, "r": 20, "t": 30, "b": 40})
    return common.legend_below(fig)


def entropy_against_length(table: pd.DataFrame, models: dict[str, str] | None = None) -> go.Figure:
    """A point per document, model and length (explorer.analysis.corpus.entropy_by_length): the
    tokens measured on a log axis, the mean normalised entropy of its heads; a document's points
    joined across its lengths, one colour per model. Up to NAMED_DOCUMENTS documents each get a
    marker and a legend entry under their model; more are told apart by their hover only."""
    if table.empty:
        raise ValueError("the sweep has no dense rows to draw entropy from")
    models = models or model_colours(dict.fromkeys(table.model))
    sources = sorted(set(table.source))
    named = len(sources) <= NAMED_DOCUMENTS
    fig = go.Figure()
    for model, colour in models.items():
        name = _plain(short_name(model))
        for i, (source, part) in enumerate(table[table.model == model].groupby("source", sort=True)):
            part = part.sort_values("tokens")
            document = _plain(part.document.iloc[0])
            fig.add_trace(go.Scatter(
                x=part.tokens, y=part.entropy, mode="markers+lines", name=document if named else name,
                legendgroup=model, legendgrouptitle={"text": name} if named else None, showlegend=named or i == 0,
                line={"color": colour, "width": 1.5},
                marker={"color": colour, "size": 9, "line": {"width": 2, "color": colour},  # open: stacked points show
                        "symbol": DOCUMENT_SYMBOLS[sources.index(source)] if named else "circle-open"},
                customdata=list(zip(map(_plain, part.document), part.heads, part.p10, part.p90)),  # numbers stay
                hovertemplate="%{customdata[0]}<br>first %{x:,} tokens<br>mean normalised entropy %{y:.3f} over "
                              "%{customdata[1]} heads (10th to 90th percentile %{customdata[2]:.3f} to "
                              "%{customdata[3]:.3f})<extra>" + name + "</extra>"))
    xaxis = {"title": LABELS["tokens"], **common.log_axis(table.tokens, counts=True, pad=0.15)}
    lengths = sorted(set(table.tokens))
    if len(lengths) <= TICKED_LENGTHS:  # a sweep's caps: ticks where the points are, not at 1-2-5 near them
        xaxis.update(tickmode="array", tickvals=lengths)
    fig.update_layout(title="Normalised entropy against length", height=420, xaxis=xaxis,
                      yaxis={"title": "normalised entropy (1 = uniform)", "range": [0, 1.02]},
                      margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return common.legend_below(fig)
