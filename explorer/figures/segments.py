"""Charts of segmentations: spans per level over the text, boundaries on a pooled
attention map, a value per segment, and text tinted segment by segment.

Segmentations are given as segment start token indices (explorer.core.segments).
Long texts are pooled to at most `points` bins or bars, like explorer.figures.common.
"""
from __future__ import annotations

import bisect
import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explorer.core import segments
from explorer.core.pooling import edges as bin_edges
from explorer.figures import common
from explorer.figures.common import bin_labels, span_text

SPAN_COLOURS = ("#9ecae1", "#3182bd", "#bdbdbd")  # even node, odd node, a bin holding several nodes
TINTS = ("rgba(49,130,189,0.10)", "rgba(230,85,13,0.12)")


def _cpu(starts) -> torch.Tensor:
    return torch.as_tensor(starts).long().cpu()


def span_strips(levels: dict[str, object], n: int, tokens: list[str], title: str = "",
                points: int = 1500) -> go.Figure:
    """One strip per segmentation (name -> starts): alternating shades per node, grey where a
    pooled bin holds several nodes; hover names the node(s) and their text."""
    e = bin_edges(0, n, points)
    first_tok, last_tok = torch.tensor(e[:-1]), torch.tensor(e[1:]) - 1
    labels = bin_labels(tokens, e)
    z, hover = [], []
    for name, starts in levels.items():
        starts = _cpu(starts)
        ids = segments.ids(starts, n)
        ends = segments.ends(starts, n)
        first, last = ids[first_tok], ids[last_tok]
        z.append(torch.where(first == last, first % 2, torch.full_like(first, 2)).tolist())
        row = []
        for a, b, label in zip(first.tolist(), last.tolist(), labels):
            nodes = f"node {a}" if a == b else f"nodes {a}–{b}"
            span = f"tokens {int(starts[a])}–{int(ends[b]) - 1}"
            row.append(f"{html.escape(name)}: {nodes} ({span})<br>{html.escape(label)}")
        hover.append(row)
    scale = [[0.0, SPAN_COLOURS[0]], [0.33, SPAN_COLOURS[0]], [0.34, SPAN_COLOURS[1]], [0.66, SPAN_COLOURS[1]],
             [0.67, SPAN_COLOURS[2]], [1.0, SPAN_COLOURS[2]]]
    names = list(levels)
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=names, zmin=0, zmax=2, colorscale=scale, showscale=False,
                               text=hover, hovertemplate="%{text}<extra></extra>", xgap=0, ygap=2))
    step = max(1, len(labels) // 8)
    fig.update_layout(title=title, height=70 + 30 * len(names), margin={"l": 90, "r": 10, "t": 40 if title else 10,
                                                                          "b": 30},
                      xaxis={"tickmode": "array", "tickvals": labels[::step],
                             "ticktext": [str(x) for x in e[:-1][::step]], "title": "token position"},
                      yaxis={"autorange": "reversed"})
    return fig


def _axis_position(p: int, edges: list[int]) -> float:
    """Where token position p falls on a pooled axis whose bin b spans edges[b]..edges[b+1]-1."""
    b = bisect.bisect_right(edges, p) - 1
    return b - 0.5 + (p - edges[b]) / (edges[b + 1] - edges[b])


def add_boundaries(fig: go.Figure, starts, row_edges: list[int], col_edges: list[int],
                   max_lines: int = 120, colour: str = "rgba(255,255,255,0.8)", dash: str = "solid") -> int | None:
    """Draw segment boundaries inside the window on a pooled heatmap (common.pooled_heatmap):
    vertical at key boundaries, horizontal at query boundaries. Returns how many were drawn,
    or None, drawing nothing, when more than max_lines fall in the window (they would hide the map)."""
    starts = _cpu(starts).tolist()
    rows = [p for p in starts if row_edges[0] < p < row_edges[-1]]
    cols = [p for p in starts if col_edges[0] < p < col_edges[-1]]
    if len(rows) + len(cols) > max_lines:
        return None
    nr, nc = len(row_edges) - 1, len(col_edges) - 1
    line = {"color": colour, "width": 1, "dash": dash}
    shapes = [{"type": "line", "xref": "x", "yref": "y", "x0": x, "x1": x, "y0": -0.5, "y1": nr - 0.5, "line": line}
              for x in (_axis_position(p, col_edges) for p in cols)]
    shapes += [{"type": "line", "xref": "x", "yref": "y", "x0": -0.5, "x1": nc - 0.5, "y0": y, "y1": y, "line": line}
               for y in (_axis_position(p, row_edges) for p in rows)]
    common.add_lines(fig, shapes)
    return len(rows) + len(cols)


def per_segment(values, starts, n: int, tokens: list[str], title: str = "", y_title: str = "",
                points: int = 400, height: int = 300) -> go.Figure:
    """Bars of a per-token series averaged over each segment, bar width = segment length.
    With more than `points` segments, consecutive segments are merged into `points` groups."""
    starts = _cpu(starts)
    x = torch.as_tensor(values, dtype=torch.float32).detach().cpu().reshape(1, -1, 1)
    group_first = bin_edges(0, starts.numel(), points)
    groups = starts[group_first[:-1]]
    mean = segments.pool_mean(x, groups)[0, :, 0].numpy()
    ends = segments.ends(groups, n)
    hover = []
    for g, (a, b) in enumerate(zip(groups.tolist(), ends.tolist())):
        s0, s1 = group_first[g], group_first[g + 1] - 1
        which = f"segment {s0}" if s0 == s1 else f"segments {s0}–{s1}"
        hover.append(f"{which}, tokens {a}–{b - 1}<br>{html.escape(span_text(tokens, a, b))}")
    sizes = (ends - groups).numpy()
    fig = go.Figure(go.Bar(x=groups.numpy() + sizes / 2, y=mean, width=sizes, text=hover, textposition="none",
                           marker={"color": SPAN_COLOURS[1], "line": {"width": 0.5, "color": "white"}},
                           hovertemplate="%{text}<br>" + y_title + " %{y:.4g}<extra></extra>"))
    fig.update_layout(title=title, height=height, xaxis_title="token position", yaxis_title=y_title,
                      margin={"l": 50, "r": 10, "t": 40, "b": 40}, bargap=0)
    return fig


def segmented_text(text: str, offsets: list[tuple[int, int]], starts, start: int, stop: int,
                   focus: int | None = None) -> str:
    """HTML of tokens start..stop-1 as written, each segment tinted in turn, a red bar at every
    boundary; user text is escaped."""
    starts = _cpu(starts)
    ids = segments.ids(starts, len(offsets)).tolist()
    first = set(starts.tolist())
    parts, cursor = [], None
    for i in range(start, stop):
        a, b = offsets[i]
        if a == b:
            continue
        if cursor is not None and a > cursor:
            parts.append(html.escape(text[cursor:a]))
        if i in first and i > 0:
            parts.append(f'<span title="segment {ids[i]} starts at token {i}" '
                         'style="border-left: 2px solid #d62728; margin-left: 1px;"></span>')
        style = f"background: {TINTS[ids[i] % 2]};"
        if i == focus:
            style += " outline: 2px solid #3366cc;"
        parts.append(f'<span title="#{i}, segment {ids[i]}" style="{style}">{html.escape(text[a:b])}</span>')
        cursor = b
    body = "".join(parts).replace("\n", "<br>")
    return f'<div style="line-height:1.7; font-family: Georgia, serif; white-space: normal;">{body}</div>'


def level_bars(shares, names: list[str], title: str = "", height: int = 260) -> go.Figure:
    """The share of one query's attention that each level (or part) supplies."""
    y = np.asarray(torch.as_tensor(shares, dtype=torch.float32).cpu(), dtype=float)
    fig = go.Figure(go.Bar(x=names, y=y, marker={"color": SPAN_COLOURS[1]},
                           hovertemplate="%{x}<br>share %{y:.4f}<extra></extra>"))
    fig.update_layout(title=title, height=height, yaxis={"title": "share of attention", "range": [0, 1]},
                      margin={"l": 50, "r": 10, "t": 40, "b": 40})
    return fig


def segment_table(text: str, offsets: list[tuple[int, int]], starts, ends, per_token=None,
                  name: str = "dense mass beyond") -> pd.DataFrame:
    """One row per segment: token span, character span in the text, size, its text, and the mean of a
    per-token series over it (e.g. the dense mass crossing out)."""
    starts, ends = _cpu(starts), _cpu(ends)
    chars = segments.char_spans(starts, offsets)
    table = pd.DataFrame({"first token": starts.tolist(), "last token": (ends - 1).tolist(),
                          "tokens": (ends - starts).tolist(), "first char": [a for a, _ in chars],
                          "end char": [b for _, b in chars]})
    if per_token is not None:
        series = torch.as_tensor(per_token, dtype=torch.float32).reshape(1, -1, 1)
        table[name] = segments.pool_mean(series, starts)[0, :, 0].tolist()
    table["text"] = [text[a:b][:80].replace("\n", " ") for a, b in chars]
    return table
