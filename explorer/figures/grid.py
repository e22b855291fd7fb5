"""Several pooled attention maps as one figure: subplots `per_row` to a row, a colour bar per scale.

One figure (not one chart per map) keeps the maps wide enough to read and lets one colour bar
stand for every map sharing a scale (explorer.figures.scale.fit_scales); maps on scales of their
own get bars of their own, stacked at the right and named by their maps.
Each map keeps the categorical bin axes and hover of common.pooled_heatmap, so a box selected
on any of them maps back to tokens with `selected_window`.

Selecting: with `dragmode="select"` a Streamlit box-selection event's `selection["box"]` holds
one dict per box, {"xref": "x3", "yref": "y3", "x": [x0, x1], "y": [y0, y1]}, the axis ids of
the subplot it was drawn on and its corners in category positions. `selected_window(fig, maps,
box)` finds the map whose heatmap sits on those axes (trace.xaxis == xref) and turns the box
into that map's token window.
"""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.figures import colours, common
from explorer.figures.scale import Scale

ROW_HEIGHT = 440  # pixels per row of maps: about square at two maps to a wide page
SPACING = 90  # pixels between rows: the upper maps' key ticks, then the next row's titles


def map_grid(maps: dict, tokens: list[str], scales: Scale | list, per_row: int = 2, row_height: int = ROW_HEIGHT,
             label: str = "weight", n: int | None = None) -> go.Figure:
    """N pooled maps (name -> explorer.core.pooling.PooledMap, head 0 drawn), one colour axis per scale.

    scales: one Scale every map shares (fit_scale), or (names, scale) groups (fit_scales); a
    scale's label names its colour bar unless `label` says otherwise; n: the text's tokens (keys a row can see);
    a name that is a mechanism's key or title is shown as its title. The heatmap of map i is named
    by its key in `maps`, on axes x{i+1}, y{i+1} (plotly calls the first pair x, y).
    """
    if not maps:
        raise ValueError("map_grid needs at least one map")
    per_row = max(1, min(per_row, len(maps)))
    rows = math.ceil(len(maps) / per_row)
    height = rows * row_height + (rows - 1) * SPACING
    fig = make_subplots(rows=rows, cols=per_row, subplot_titles=[colours.title_of(n) for n in maps],
                        horizontal_spacing=0.08, vertical_spacing=SPACING / height)
    groups = [(tuple(maps), scales)] if isinstance(scales, Scale) else scales
    axis_of = {name: ("coloraxis" + (str(g + 1) if g else ""), scale)
               for g, (names, scale) in enumerate(groups) for name in names}
    for i, (name, m) in enumerate(maps.items()):
        axis, scale = axis_of[name]
        shown = scale.label if label == "weight" else label
        z = scale.values(getattr(m, scale.pool)[0], m.row_edges, m.row_edges[-1] if n is None else n)
        row_labels, col_labels = common.bin_labels(tokens, m.row_edges), common.bin_labels(tokens, m.col_edges)
        r, c = divmod(i, per_row)
        fig.add_trace(common.heat_trace(z, row_labels, col_labels, shown, name=name, coloraxis=axis),
                      r + 1, c + 1)
        xaxis, yaxis = common.map_axes(row_labels, col_labels, m.row_edges, m.col_edges)
        lowest = i + per_row >= len(maps)  # no map below this one: it carries the key axis title
        fig.update_xaxes(xaxis, title=xaxis["title"] if lowest else None, row=r + 1, col=c + 1)
        fig.update_yaxes(yaxis, title=yaxis["title"] if c == 0 else None, row=r + 1, col=c + 1)
    for c in range(len(maps) - (rows - 1) * per_row, per_row):  # the last row's empty cells
        fig.update_xaxes(visible=False, row=rows, col=c + 1)
        fig.update_yaxes(visible=False, row=rows, col=c + 1)
    for g, (names, scale) in enumerate(groups):
        shown = scale.label if label == "weight" else label
        named = "<br>".join(colours.title_of(k) for k in names) + "<br>" if len(groups) > 1 else ""
        fig.update_layout({"coloraxis" + (str(g + 1) if g else ""): _colour_axis(scale, named + shown, g, len(groups))})
    fig.update_layout(height=height, dragmode="select", margin={"l": 60, "r": 10, "t": 40, "b": 50})
    return fig


def _colour_axis(scale: Scale, label: str, place: int = 0, bars: int = 1) -> dict:
    """A scale's colour bar (red-blue centred on zero for signed maps), the `place`-th of `bars`
    stacked top to bottom at the right."""
    gap = 0.08
    colorbar = {"title": label, "len": (1 - gap * (bars - 1)) / bars, "y": 1 - place * (1 + gap) / bars,
                "yanchor": "top"}
    return {"colorscale": common.DIVERGING if scale.signed else common.SEQUENTIAL, "colorbar": colorbar,
            "cmin": scale.zmin, "cmax": scale.zmax}


def selected_window(fig: go.Figure, maps: dict, box: dict) -> tuple[str, tuple[int, int], tuple[int, int]] | None:
    """(map name, (q0, q1), (k0, k1)): the map a selected box was drawn on and the token window it
    covers; None when the box lies on no map of `maps` or lacks an axis."""
    for trace in fig.data:
        on = (trace.xaxis or "x", trace.yaxis or "y") == (box.get("xref", "x"), box.get("yref", "y"))
        if on and trace.name in maps:
            m = maps[trace.name]
            window = common.box_window(box, m.row_edges, m.col_edges)
            return None if window is None else (trace.name, *window)
    return None
