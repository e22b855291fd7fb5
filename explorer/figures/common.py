"""Charts every page shares: pooled attention maps, metrics along the text,
colour strips over the text, and text shaded by attention weight.

Long sequences arrive here already pooled (explorer.core.pooling) or are pooled
here to at most `points` marks, so a chart never sends more than it can show.
"""
from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
import torch

from explorer.figures import colours

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu"
LEGEND_BELOW = {"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0, "xanchor": "left"}


def as_array(x, dtype=float) -> np.ndarray:
    """A tensor (on any device), list or array as a NumPy array (dtype None keeps the values' own)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    return np.asarray(x, dtype=dtype)


def span_text(pieces: list[str], start: int, stop: int, max_chars: int = 48) -> str:
    """Readable text of tokens start..stop-1 for hover labels: a Doc's `pieces` (each token's text
    with the whitespace before it, made visible) joined as written, cut at max_chars."""
    text = "".join(pieces[start : min(stop, start + max_chars)])
    return text[:max_chars] + "…" if len(text) > max_chars or stop - start > max_chars else text


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


def legend_below(fig: go.Figure) -> go.Figure:
    """Put the legend under the x-axis title, never on it: hung from the foot of the figure
    (container coordinates), so plotly grows the bottom margin to hold it however many lines it
    wraps to, with every axis growing its margin for its ticks and title (Streamlit's plotly
    template leaves that off, which puts the x title on the plot and the legend on the title)."""
    fig.update_layout(legend=LEGEND_BELOW)
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def heat_values(matrix, log: bool, label: str) -> tuple[np.ndarray, str]:
    """The values a map colours and what its colour bar calls them (log10 of weights: attention is heavy-tailed)."""
    z = as_array(matrix)
    if log:
        return np.log10(np.clip(z, 1e-12, None)), f"log10 {label}"
    return z, label


def heat_trace(z, rows: list[str], cols: list[str], label: str, **style) -> go.Heatmap:
    """A pooled map's heatmap on categorical bin labels (unique per bin, so a selected box maps
    back to bins), hover naming the query and key ranges, their text and the value."""
    return go.Heatmap(z=z, x=cols, y=rows, hovertemplate="query %{y}<br>key %{x}<br>" + label
                      + " %{z:.4g}<extra></extra>", **style)


def map_axes(rows: list[str], cols: list[str], row_edges: list[int], col_edges: list[int]) -> tuple[dict, dict]:
    """(x, y) axis settings of a pooled map: token positions as ticks, queries top to bottom."""
    return ({"title": "key position", **_ticks(cols, col_edges)},
            {"title": "query position", "autorange": "reversed", **_ticks(rows, row_edges)})


def colour_scale(diverging: bool) -> dict:
    """Red-blue centred on zero for signed values, the sequential scale otherwise."""
    return {"colorscale": DIVERGING, "zmid": 0.0} if diverging else {"colorscale": SEQUENTIAL}


def pooled_heatmap(matrix, tokens: list[str], row_edges: list[int], col_edges: list[int],
                   title: str = "", zmin: float | None = None, zmax: float | None = None,
                   log: bool = False, diverging: bool = False, height: int = 460,
                   label: str = "weight") -> go.Figure:
    """Attention map at display resolution: rows are query bins, columns key bins.

    log shows log10 of the values (attention is heavy-tailed); diverging centres
    a red-blue scale on zero for signed values (Linformer's effective weights, an
    additive bias); label names the values on the colour bar and in the hover.
    """
    z, label = heat_values(matrix, log, label)
    rows, cols = bin_labels(tokens, row_edges), bin_labels(tokens, col_edges)
    fig = go.Figure(heat_trace(z, rows, cols, label, zmin=zmin, zmax=zmax, colorbar={"title": label},
                               **colour_scale(diverging)))
    xaxis, yaxis = map_axes(rows, cols, row_edges, col_edges)
    fig.update_layout(title=title, height=height, margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      xaxis=xaxis, yaxis=yaxis)
    return fig


def box_window(box: dict, row_edges: list[int], col_edges: list[int]) -> tuple[tuple[int, int], ...] | None:
    """The token window ((q0, q1), (k0, k1)) a box selected on a pooled map covers.

    box: one entry of a Streamlit selection's "box" list ({"x": [x0, x1], "y": [y0, y1]} in
    category positions: bin b spans b-0.5..b+0.5); every bin the box touches is in the window.
    None when the box lacks an axis.
    """
    spans = []
    for axis, edges in (("y", row_edges), ("x", col_edges)):
        values = box.get(axis) or []
        if len(values) < 2:
            return None
        last = len(edges) - 2
        a, b = (min(last, max(0, round(v))) for v in (min(values), max(values)))
        spans.append((edges[a], edges[b + 1]))
    return spans[0], spans[1]


def log_axis(values, counts: bool = False, pad: float = 0.02) -> dict:
    """A log axis fitted to the positive values: its range in log10 (plotly's unit on log axes),
    ticks at powers of ten labelled 10^k (counts: 1, 10, 100, 1,000), or at 1-2-5 steps when
    the values span under three decades (fewer powers of ten than that leave too few ticks);
    never bare mantissas.

    pad: room at either end, as a share of the span (at least 0.02 decade).
    """
    v = as_array(values).reshape(-1)
    v = v[np.isfinite(v) & (v > 0)]
    lo, hi = (math.log10(v.min()), math.log10(v.max())) if v.size else (0.0, 1.0)
    margin = max(pad * (hi - lo), 0.02)
    axis = {"type": "log", "range": [lo - margin, hi + margin], "exponentformat": "power"}
    if counts:
        axis["tickformat"] = ",d"
    if hi - lo >= 3:
        return {**axis, "dtick": 1}
    steps = [m * 10.0**k for k in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in (1, 2, 5)]
    shown = [t for t in steps if lo - margin <= math.log10(t) <= hi + margin]
    return {**axis, "tickmode": "array", "tickvals": shown}


def pool_series(values, points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Mean, min and max of a per-token series in at most `points` bins, with bin edges."""
    from explorer.core.pooling import edges as bin_edges

    x = as_array(values)
    e = bin_edges(0, len(x), points)
    parts = [x[a:b] for a, b in zip(e[:-1], e[1:])]
    mean = np.array([p.mean() for p in parts])
    return np.array(e[:-1]), mean, np.array([p.min() for p in parts]), np.array([p.max() for p in parts]), e


MAX_MARKS = 60  # vertical marks a chart along the text can carry before they hide the curve


def vertical(x: float, line: dict) -> dict:
    """A line at x across the whole plot height, as a layout shape (see add_lines)."""
    return {"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1, "line": line}


def add_lines(fig: go.Figure, shapes: list[dict]) -> None:
    """Add layout shapes in one update: plotly's add_vline/add_shape validate the whole layout on
    every call (180 window boundaries took 10 s one by one, 30 ms at once)."""
    if shapes:
        fig.update_layout(shapes=[*fig.layout.shapes, *shapes])



def shaded(x, high, low, colour: str, alpha: float = 0.18, **extra) -> go.Scatter:
    """The range between two curves as one filled outline: no markers (plotly adds them to short traces
    in its default colours), no hover; extra: name, legendgroup, showlegend (default off)."""
    x = np.asarray(x)
    return go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([np.asarray(high), np.asarray(low)[::-1]]),
                      mode="lines", fill="toself", fillcolor=colours.fill(colour, alpha), line={"width": 0},
                      hoverinfo="skip", **{"showlegend": False, **extra})

def along_text(series: dict[str, object], tokens: list[str], title: str = "", y_title: str = "",
               points: int = 1500, band: bool = True, height: int = 300, marks: list[int] | None = None,
               positions: list[int] | None = None, stacked: bool = False,
               colour: dict[str, str] | None = None, mechanisms: bool = True,
               clickable: bool = False) -> go.Figure:
    """Per-token series drawn along the text; long texts pooled to `points` bins
    with a min-max band so extremes stay visible. `marks` draws vertical lines.
    clickable: every point carries a marker, since plotly selects points, not lines (a click on
    the curve then picks the token there; x of a pooled point is its bin's first token).

    positions: the token position of each value when the series covers a
    sample of the text (as fidelity does), not every token.
    stacked: shares that add up per token, drawn as stacked areas (no band).
    A series named by a mechanism's key or title takes its colour and title
    (explorer.figures.colours); `colour` sets others by name. mechanisms=False keeps every name
    as given (regions such as "memory" that only share a mechanism's name).
    """
    fig = go.Figure()
    names = list(series)
    hues = {**(colours.series_colours(names) if mechanisms else dict(zip(names, colours.cycle(len(names))))),
            **(colour or {})}
    for name, values in series.items():
        x, mean, lo, hi, e = pool_series(values, points)
        if positions is not None:
            at = list(positions) + [len(tokens)]
            e = [at[i] for i in e]
            x = np.array(e[:-1])
        text = bin_labels(tokens, e)
        shown = colours.title_of(name) if mechanisms else name
        if band and not stacked and len(x) < len(np.asarray(values)):
            fig.add_trace(shaded(x, hi, lo, hues[name], name=f"{shown} range"))
        line = {"color": hues[name], **({"width": 0.5} if stacked else {})}
        dots = {"mode": "lines+markers", "marker": {"size": 3, "color": hues[name], "opacity": 0.25}} \
            if clickable else {"mode": "lines"}
        fig.add_trace(go.Scatter(x=x, y=mean, name=shown, text=text, line=line, **dots,
                                 hovertemplate="%{text}<br>" + shown + " %{y:.4g}<extra></extra>",
                                 **({"stackgroup": "one", "fillcolor": colours.fill(hues[name], 0.6)}
                                    if stacked else {})))
    add_lines(fig, [vertical(m, {"width": 1, "dash": "dot", "color": "rgba(128,128,128,0.45)"}) for m in marks or []])
    fig.update_layout(title=title, height=height, xaxis_title="token position", yaxis_title=y_title,
                      margin={"l": 50, "r": 10, "t": 40, "b": 40}, showlegend=len(series) > 1,
                      hovermode="x unified" if stacked else "closest")
    return legend_below(fig)


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
                focus: int | None = None, rgb: tuple[int, int, int] = (255, 140, 0),
                marked: frozenset | set = frozenset(), labels: list[str] | None = None) -> str:
    """HTML of tokens start..stop-1 in the original text, each shaded by its weight.

    The characters between tokens are kept, so the text reads as written; every piece of user
    text is escaped. Weights are scaled by their maximum in view. Each token is a span with its
    index (data-i), which the inspector makes clickable. A token of whitespace alone that holds
    weight shows its whitespace (· a space, ↵ a newline): no weight is left invisible. `focus`
    is outlined, `marked` tokens (a selection) underlined; labels: each token named in its hover.
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
        classes = " ".join(c for c, on in (("focus", i == focus), ("marked", i in marked)) if on)
        name = html.escape(labels[i]) if labels else ""
        label = _token_html(text[a:b], alpha) if b > a else f"<small>[token #{i}]</small> "
        parts.append(f'<span data-i="{i}" class="{classes}" title="#{i} {name} weight {w[i]:.3g}" '
                     f'style="background: rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.3f})">{label}</span>')
        cursor = b if b > a else cursor
    body = "".join(parts).replace("\n", "<br>")
    return f'<div class="shaded" style="line-height:1.8; white-space: pre-wrap;">{body}</div>'


VISIBLE_FROM = 0.02  # share of the largest weight in view from which a whitespace token shows its whitespace


def _token_html(piece: str, alpha: float) -> str:
    """A token's text, escaped; whitespace alone made visible (· ↵, line breaks kept) when it holds weight."""
    if not piece.isspace() or alpha < VISIBLE_FROM:
        return html.escape(piece)
    marks = "".join("↵\n" if c == "\n" else "→" if c == "\t" else "" if c == "\r" else "·" for c in piece)
    return f'<span class="ws">{marks}</span>'
