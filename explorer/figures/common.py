"""Charts every page shares: pooled attention maps, metrics along the text,
colour strips over the text, and text shaded by attention weight.

Long sequences arrive here already pooled (explorer.core.pooling) or are pooled
here to at most `points` marks, so a chart never sends more than it can show.
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import torch

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu"


def as_array(x, dtype=float) -> np.ndarray:
    """A tensor (on any device), list or array as a NumPy array (dtype None keeps the values' own)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    return np.asarray(x, dtype=dtype)


def span_text(tokens: list[str], start: int, stop: int, max_chars: int = 48) -> str:
    """Readable text of tokens[start:stop] for hover labels, word pieces joined."""
    words = []
    for tok in tokens[start : min(stop, start + 24)]:
        if tok.startswith("##") and words:
            words[-1] += tok[2:]
        else:
            words.append(tok.replace("Ġ", "").replace("▁", ""))
    text = " ".join(words)
    if len(text) > max_chars or stop - start > 24:
        text = text[:max_chars] + "…"
    return text


def bin_labels(tokens: list[str], edges: list[int]) -> list[str]:
    """One unique hover label per bin: its token range and its text."""
    labels = []
    for a, b in zip(edges[:-1], edges[1:]):
        where = f"{a}" if b - a == 1 else f"{a}–{b - 1}"
        labels.append(f"{where} │ {span_text(tokens, a, b)}")
    return labels


def _ticks(labels: list[str], edges: list[int], count: int = 8) -> dict:
    step = max(1, len(labels) // count)
    return {"tickmode": "array", "tickvals": labels[::step], "ticktext": [str(e) for e in edges[:-1][::step]]}


def pooled_heatmap(matrix, tokens: list[str], row_edges: list[int], col_edges: list[int],
                   title: str = "", zmin: float | None = None, zmax: float | None = None,
                   log: bool = False, diverging: bool = False, height: int = 460) -> go.Figure:
    """Attention map at display resolution: rows are query bins, columns key bins.

    log shows log10 of the weight (attention is heavy-tailed); diverging centres
    a red-blue scale on zero for signed effective weights (Linformer).
    """
    z = as_array(matrix)
    label = "weight"
    if log:
        z = np.log10(np.clip(z, 1e-12, None))
        label = "log10 weight"
    rows, cols = bin_labels(tokens, row_edges), bin_labels(tokens, col_edges)
    scale = {"colorscale": DIVERGING, "zmid": 0.0} if diverging else {"colorscale": SEQUENTIAL}
    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=rows, zmin=zmin, zmax=zmax, colorbar={"title": label}, **scale,
        hovertemplate="query %{y}<br>key %{x}<br>" + label + " %{z:.4g}<extra></extra>"))
    fig.update_layout(title=title, height=height, margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      xaxis={"title": "key position", **_ticks(cols, col_edges)},
                      yaxis={"title": "query position", "autorange": "reversed", **_ticks(rows, row_edges)})
    return fig


def pool_series(values, points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Mean, min and max of a per-token series in at most `points` bins, with bin edges."""
    from explorer.core.pooling import edges as bin_edges

    x = as_array(values)
    e = bin_edges(0, len(x), points)
    parts = [x[a:b] for a, b in zip(e[:-1], e[1:])]
    mean = np.array([p.mean() for p in parts])
    return np.array(e[:-1]), mean, np.array([p.min() for p in parts]), np.array([p.max() for p in parts]), e


def along_text(series: dict[str, object], tokens: list[str], title: str = "", y_title: str = "",
               points: int = 1500, band: bool = True, height: int = 300, marks: list[int] | None = None,
               positions: list[int] | None = None, stacked: bool = False) -> go.Figure:
    """Per-token series drawn along the text; long texts pooled to `points` bins
    with a min-max band so extremes stay visible. `marks` draws vertical lines.

    positions: the token position of each value when the series covers a
    sample of the text (as fidelity does), not every token.
    stacked: shares that add up per token, drawn as stacked areas (no band).
    """
    fig = go.Figure()
    for name, values in series.items():
        x, mean, lo, hi, e = pool_series(values, points)
        if positions is not None:
            at = list(positions) + [len(tokens)]
            e = [at[i] for i in e]
            x = np.array(e[:-1])
        text = bin_labels(tokens, e)
        if band and not stacked and len(x) < len(np.asarray(values)):
            fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi, lo[::-1]]),
                                     fill="toself", opacity=0.2, line={"width": 0}, hoverinfo="skip",
                                     showlegend=False, name=f"{name} range"))
        fig.add_trace(go.Scatter(x=x, y=mean, name=name, mode="lines", text=text,
                                 hovertemplate="%{text}<br>" + name + " %{y:.4g}<extra></extra>",
                                 **({"stackgroup": "one", "line": {"width": 0.5}} if stacked else {})))
    for m in marks or []:
        fig.add_vline(x=m, line={"width": 1, "dash": "dot", "color": "grey"})
    fig.update_layout(title=title, height=height, xaxis_title="token position", yaxis_title=y_title,
                      margin={"l": 50, "r": 10, "t": 40, "b": 40}, showlegend=len(series) > 1,
                      legend={"orientation": "h", "y": 1.12}, hovermode="x unified" if stacked else "closest")
    return fig


def strips(ids, tokens: list[str], names: list[str], title: str = "", points: int = 1500,
           height: int | None = None, colorscale: str = "Turbo") -> go.Figure:
    """Categorical ids (e.g. bucket per token, one row per round) as colour strips over the text.

    Long texts show the id of the first token of each bin (categorical values cannot be averaged).
    """
    from explorer.core.pooling import edges as bin_edges

    z = as_array(ids, dtype=None)
    z = z.reshape(len(names), -1)
    e = bin_edges(0, z.shape[1], points)
    labels = bin_labels(tokens, e)
    fig = go.Figure(go.Heatmap(z=z[:, e[:-1]], x=labels, y=names, colorscale=colorscale, showscale=False,
                               hovertemplate="%{y}<br>%{x}<br>id %{z}<extra></extra>"))
    fig.update_layout(title=title, height=height or 60 + 28 * len(names),
                      margin={"l": 80, "r": 10, "t": 40 if title else 10, "b": 30},
                      xaxis=_ticks(labels, e))
    return fig


def shaded_text(text: str, offsets: list[tuple[int, int]], weights, start: int, stop: int,
                focus: int | None = None, rgb: tuple[int, int, int] = (255, 140, 0)) -> str:
    """HTML of tokens start..stop-1 in the original text, each shaded by its weight.

    The characters between tokens are kept, so the text reads as written; every
    piece of user text is escaped. Weights are scaled by their maximum in view.
    """
    w = as_array(weights)
    shown = [i for i in range(start, stop) if offsets[i][0] < offsets[i][1]]
    top = float(np.abs(w[shown]).max()) if shown else 0.0
    top = top or 1.0
    parts, cursor = [], None
    for i in range(start, stop):
        a, b = offsets[i]
        if a == b and i != focus:  # special tokens the model adds have no text; shown only as the focus
            continue
        if cursor is not None and a > cursor:
            parts.append(html.escape(text[cursor:a]))
        alpha = min(1.0, abs(w[i]) / top)
        style = f"background: rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.3f});"
        if i == focus:
            style += " outline: 2px solid #3366cc;"
        label = html.escape(text[a:b]) if b > a else f"<small>[query #{i}]</small> "
        parts.append(f'<span title="#{i} weight {w[i]:.3g}" style="{style}">{label}</span>')
        cursor = b if b > a else cursor
    body = "".join(parts).replace("\n", "<br>")
    return f'<div style="line-height:1.7; white-space: normal;">{body}</div>'
