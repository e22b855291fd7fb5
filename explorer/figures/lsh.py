"""Charts of the LSH page: bucket strips over the text and over the attention map,
bucket sizes, one round's sorted-and-chunked matrix, which of dense's top-k
pairs LSH catches, and recall across re-hashes. Data in, plotly figure out."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.figures import colours, common
from explorer.figures.common import as_array
from explorer.figures.scale import fit_scale

BUCKETS = "Turbo"
MAX_BOXES = 120  # chunk outlines drawn only when this few chunks are in view


def bucket_strips(buckets, key_buckets, tokens: list[str], shared_qk: bool) -> go.Figure:
    """One colour strip per round (queries; keys too when they are hashed apart); [rounds, n] ids."""
    b, kb = as_array(buckets, dtype=None), as_array(key_buckets, dtype=None)
    rounds = b.shape[0]
    if shared_qk:
        return common.strips(b, tokens, [f"round {r}" for r in range(rounds)], colorscale=BUCKETS)
    ids = np.stack([x for r in range(rounds) for x in (b[r], kb[r])])
    names = [f"r{r} {kind}" for r in range(rounds) for kind in ("queries", "keys")]
    return common.strips(ids, tokens, names, colorscale=BUCKETS)


def map_with_buckets(matrix, tokens: list[str], row_edges: list[int], col_edges: list[int],
                     row_ids, col_ids, title: str = "", zmin=None, zmax=None, log: bool = False,
                     height: int = 500, label: str = "weight") -> go.Figure:
    """A pooled attention map with the bucket of each query bin on the left and each key bin on top.

    row_ids, col_ids: bucket per token over the whole text ([n]); a bin shows its first token's bucket.
    """
    base = common.pooled_heatmap(matrix, tokens, row_edges, col_edges, zmin=zmin, zmax=zmax, log=log, label=label)
    heat = base.data[0]
    rows, cols = list(heat.y), list(heat.x)
    r_ids = as_array(row_ids, dtype=None)[np.asarray(row_edges[:-1])]
    c_ids = as_array(col_ids, dtype=None)[np.asarray(col_edges[:-1])]
    fig = make_subplots(rows=2, cols=2, column_widths=[0.04, 0.96], row_heights=[0.05, 0.95],
                        shared_xaxes=True, shared_yaxes=True, horizontal_spacing=0.006, vertical_spacing=0.006)
    fig.add_trace(heat.update(colorbar={"title": heat.colorbar.title.text, "len": 0.9, "y": 0.45}), 2, 2)
    strip = {"colorscale": BUCKETS, "showscale": False, "zmin": 0, "zmax": max(1, int(max(r_ids.max(), c_ids.max())))}
    fig.add_trace(go.Heatmap(z=[c_ids], x=cols, y=["key bucket"], hovertemplate="key %{x}<br>bucket %{z}"
                             "<extra></extra>", **strip), 1, 2)
    fig.add_trace(go.Heatmap(z=r_ids[:, None], x=["query bucket"], y=rows, hovertemplate="query %{y}<br>"
                             "bucket %{z}<extra></extra>", **strip), 2, 1)
    fig.update_layout(title=title, height=height, margin={"l": 50, "r": 10, "t": 40, "b": 40})
    fig.update_xaxes(showticklabels=False, row=2, col=1)
    fig.update_yaxes(showticklabels=False, row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_xaxes(_axis_ticks(base.layout.xaxis), title="key position", row=2, col=2)
    fig.update_yaxes(_axis_ticks(base.layout.yaxis), title="query position", autorange="reversed", row=2, col=1)
    return fig


def _axis_ticks(axis) -> dict:
    return {"tickmode": axis.tickmode, "tickvals": axis.tickvals, "ticktext": axis.ticktext}


def bucket_sizes(sizes, key_sizes=None, height: int = 300) -> go.Figure:
    """Tokens in each bucket of one round ([n_buckets]); keys beside queries when hashed apart."""
    s = as_array(sizes, dtype=None)
    nb = len(s)
    fig = go.Figure(go.Bar(x=np.arange(nb), y=s, name="queries" if key_sizes is not None else "tokens",
                           marker_color=colours.SERIES[0],
                           hovertemplate="bucket %{x}<br>%{y} tokens<extra></extra>"))
    if key_sizes is not None:
        fig.add_trace(go.Bar(x=np.arange(nb), y=as_array(key_sizes, dtype=None), name="keys",
                             marker_color=colours.SERIES[1],
                             hovertemplate="bucket %{x}<br>%{y} keys<extra></extra>"))
    even = s.sum() / nb
    fig.add_hline(y=even, line={"dash": "dot", "color": "grey"})
    # the label sits past the line's right end, outside the bars, where no bar can cover it
    fig.add_annotation(x=1, xref="paper", xanchor="left", y=even, yref="y", text=f"even split<br>{even:,.0f}",
                       showarrow=False, align="left", font={"color": "grey", "size": 11})
    fig.update_layout(barmode="group", height=height, xaxis_title="bucket", yaxis_title="tokens",
                      margin={"l": 50, "r": 70, "t": 30, "b": 40})
    return common.legend_below(fig)


def size_histogram(sizes, key_sizes=None, height: int = 300) -> go.Figure:
    """How many buckets (over all rounds) hold how many tokens: [rounds, n_buckets] counts."""
    fig = go.Figure()
    series = [("queries" if key_sizes is not None else "tokens", sizes)]
    if key_sizes is not None:
        series.append(("keys", key_sizes))
    for (name, values), colour in zip(series, colours.SERIES):
        fig.add_trace(go.Histogram(x=as_array(values, dtype=None).reshape(-1), name=name, opacity=0.75,
                                   marker_color=colour,
                                   hovertemplate="%{x} tokens<br>%{y} buckets<extra></extra>"))
    fig.update_layout(barmode="overlay", height=height, xaxis_title="tokens in the bucket",
                      yaxis_title="buckets (all rounds)", margin={"l": 50, "r": 10, "t": 30, "b": 40})
    return common.legend_below(fig)


def sorted_matrix(pooled, row_tokens: list[str], col_tokens: list[str], boxes: list[tuple[int, int, int, int]],
                  title: str = "", log: bool = True, height: int = 500) -> go.Figure:
    """Dense attention in one round's sorted order, with the window each chunk computes outlined.

    boxes: (q0, q1, k0, k1) sorted-slot rectangles (lsh.chunk_windows); drawn when
    at most MAX_BOXES of them touch the view.
    """
    m = pooled.mean[0]
    scale = fit_scale([m], "mean", "log" if log else "linear")
    zmin, zmax = scale.zmin, scale.zmax
    fig = common.pooled_heatmap(m, row_tokens, pooled.row_edges, pooled.col_edges, title=title,
                                zmin=zmin, zmax=zmax, log=log, height=height)
    fig.update_xaxes(title="key, sorted by bucket then position")
    fig.update_yaxes(title="query, sorted by bucket then position")
    old = list(fig.data[0].x)
    new = common.bin_labels(col_tokens, pooled.col_edges)
    fig.data[0].update(x=new)
    fig.update_xaxes(tickvals=[new[old.index(t)] for t in fig.layout.xaxis.tickvals])
    r0, r1 = pooled.row_edges[0], pooled.row_edges[-1]
    c0, c1 = pooled.col_edges[0], pooled.col_edges[-1]
    shown = [b for b in boxes if b[0] < r1 and b[1] > r0 and b[2] < c1 and b[3] > c0]
    if len(shown) <= MAX_BOXES:
        rpos, cpos = _positions(pooled.row_edges), _positions(pooled.col_edges)
        common.add_lines(fig, [{"type": "rect", "xref": "x", "yref": "y", "x0": cpos(k0), "x1": cpos(k1),
                                "y0": rpos(q0), "y1": rpos(q1),
                                "line": {"color": "white", "width": 1}} for q0, q1, k0, k1 in shown])
    return fig


def _positions(edges: list[int]):
    """Map a slot boundary to the categorical axis coordinate (bin i spans i-0.5..i+0.5)."""
    e = np.asarray(edges)

    def at(slot: int) -> float:
        slot = min(max(slot, e[0]), e[-1])
        i = int(np.searchsorted(e, slot, side="right")) - 1
        if i >= len(e) - 1:
            return len(e) - 1.5
        return i - 0.5 + (slot - e[i]) / max(1, e[i + 1] - e[i])

    return at


def caught_pairs(rows, top_index, caught, tokens: list[str], height: int = 420, max_points: int = 20000) -> go.Figure:
    """Dense's top-k (query, key) pairs: blue dots where LSH can reach the key, orange crosses where it cannot."""
    r, idx, ok = as_array(rows, dtype=None), as_array(top_index, dtype=None), as_array(caught, dtype=None)
    q = np.repeat(r, idx.shape[1])
    k, hit = idx.reshape(-1), ok.reshape(-1)
    if q.size > max_points:
        pick = np.linspace(0, q.size - 1, max_points).round().astype(int)
        q, k, hit = q[pick], k[pick], hit[pick]
    fig = go.Figure()
    for flag, name, colour, symbol in ((True, "caught", colours.CAUGHT, colours.CAUGHT_SYMBOL),
                                       (False, "missed", colours.MISSED, colours.MISSED_SYMBOL)):
        sel = hit == flag
        text = [f"{tokens[a]!s} → {tokens[b]!s}" for a, b in zip(q[sel], k[sel])]
        fig.add_trace(go.Scattergl(x=k[sel], y=q[sel], mode="markers", name=f"{name} ({int(sel.sum()):,})",
                                   marker={"color": colour, "symbol": symbol, "size": 5, "opacity": 0.7}, text=text,
                                   hovertemplate="query %{y}, key %{x}<br>%{text}<extra></extra>"))
    fig.update_layout(height=height, xaxis_title="key position",
                      yaxis={"title": "query position", "autorange": "reversed"},
                      margin={"l": 50, "r": 10, "t": 30, "b": 40})
    return common.legend_below(fig)


def caught_by_rank(caught, height: int = 300) -> go.Figure:
    """Share of dense's r-th strongest key that LSH can reach, for r = 1..k."""
    share = as_array(caught, dtype=None).reshape(-1, as_array(caught, dtype=None).shape[-1]).mean(0)
    fig = go.Figure(go.Bar(x=np.arange(1, len(share) + 1), y=share, marker_color=colours.CAUGHT,
                           hovertemplate="rank %{x}<br>caught %{y:.1%}<extra></extra>"))
    fig.update_layout(height=height, xaxis_title="rank of the key in dense attention", yaxis_title="share caught",
                      yaxis_range=[0, 1], margin={"l": 50, "r": 10, "t": 30, "b": 40})
    return fig


def seed_spread(result: dict, height: int = 320) -> go.Figure:
    """Recall and reachable dense mass of each re-hash (one dot per seed), with their mean."""
    fig = go.Figure()
    for (name, label), colour in zip((("recall", "top-k recall"), ("reach_mass", "reachable dense mass")),
                                     colours.SERIES):
        y = as_array(result[name], dtype=None)
        fig.add_trace(go.Box(y=y, name=label, boxpoints="all", jitter=0.3, pointpos=0, boxmean="sd",
                             marker_color=colour,
                             text=[f"seed {s}" for s in result["seed"]],
                             hovertemplate="%{text}<br>%{y:.3f}<extra></extra>"))
    fig.update_layout(height=height, yaxis_title="mean over queries", yaxis_range=[0, 1.02], showlegend=False,
                      margin={"l": 50, "r": 10, "t": 30, "b": 40})
    return fig
