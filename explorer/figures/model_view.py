"""The model view's grid: one square per layer and head, coloured by a statistic, one panel per
statistic. Squares are scatter markers (not a heatmap) so that a click on one selects it
(Streamlit's click selection covers markers, not heatmap cells): x is the head, y the layer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.analysis.model_view import COLUMNS
from explorer.figures.common import SEQUENTIAL

UNIT_RANGE = {"entropy"}  # drawn on 0..1: 1 is uniform
SPACING = 0.16  # between panels: a colour bar, its ticks and title, then the next panel's layer axis
FROM_ZERO = {"first_mass", "local_mass", "retrieval"}  # shares drawn from 0 to the largest head's: a model whose
# heads all give a few percent to the first token still shows which give more


def head_grid(frame: pd.DataFrame, metrics: list[str], chosen: tuple[int, int] | None = None,
              per_row: int = 2, square: int = 26) -> go.Figure:
    """Panels of layers (rows) x heads (columns), one per metric of `metrics`; `chosen` (layer,
    head) is outlined. Normalised entropy on 0..1, shares from 0 to their largest, the others
    their own range; a log scale for counts."""
    if frame.empty:
        raise ValueError("the model view table is empty")
    layers, heads = sorted(frame.layer.unique()), sorted(frame["head"].unique())
    per_row = max(1, min(per_row, len(metrics)))
    rows = -(-len(metrics) // per_row)
    height = rows * (len(layers) * square + 110)
    fig = make_subplots(rows=rows, cols=per_row, subplot_titles=[COLUMNS[m] for m in metrics],
                        horizontal_spacing=SPACING, vertical_spacing=min(0.25, 90 / height))
    for i, metric in enumerate(metrics):
        r, c = divmod(i, per_row)
        values = frame[metric].to_numpy(dtype=float)
        log = metric in ("half_keys", "distance")
        shown = np.log10(np.clip(values, 1e-9, None)) if log else values
        lo, hi = ((0.0, 1.0) if metric in UNIT_RANGE else (0.0, float(np.nanmax(shown))) if metric in FROM_ZERO
                  else (float(np.nanmin(shown)), float(np.nanmax(shown))))
        edge = ["black" if chosen == (int(a), int(b)) else "white" for a, b in zip(frame.layer, frame["head"])]
        fig.add_trace(go.Scatter(
            x=frame["head"], y=frame.layer, mode="markers", name=metric, showlegend=False,
            customdata=np.stack([frame.layer, frame["head"], values], 1),
            marker={"symbol": "square", "size": square, "color": shown, "colorscale": SEQUENTIAL, "cmin": lo,
                    "cmax": hi if hi > lo else lo + 1, "line": {"color": edge, "width": 2},
                    "colorbar": _beside(fig, r + 1, c + 1, "log10" if log else "")},
            hovertemplate="layer %{customdata[0]}, head %{customdata[1]}<br>" + COLUMNS[metric]
                          + " %{customdata[2]:.4g}<extra></extra>"), r + 1, c + 1)
        fig.update_xaxes(title="head", tickvals=heads, range=[heads[0] - 0.6, heads[-1] + 0.6], row=r + 1, col=c + 1)
        fig.update_yaxes(title="layer", tickvals=layers, range=[layers[-1] + 0.6, layers[0] - 0.6], row=r + 1,
                         col=c + 1)
    fig.update_layout(height=height, margin={"l": 60, "r": 40, "t": 50, "b": 40})
    return fig


def _beside(fig: go.Figure, row: int, col: int, title: str) -> dict:
    """A colour bar just right of its panel and as tall as it (title written along it), so its ticks
    stay in the gap before the next panel instead of under that panel's axis title."""
    panel = fig.get_subplot(row, col)
    x, y = panel.xaxis.domain, panel.yaxis.domain
    return {"title": {"text": title, "side": "right"}, "x": x[1] + 0.01, "xanchor": "left", "xpad": 0,
            "y": (y[0] + y[1]) / 2, "len": y[1] - y[0], "thickness": 10}


def picked(event) -> tuple[int, int] | None:
    """The (layer, head) of a square clicked on head_grid, from a Streamlit selection event
    (a point's x is its head, its y its layer)."""
    points = (event or {}).get("selection", {}).get("points") or []
    for point in points:
        if "x" in point and "y" in point:
            return int(round(point["y"])), int(round(point["x"]))
    return None
