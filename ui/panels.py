"""Panels the pages place: parameter forms, zoom, dense-vs-mechanism maps,
fidelity, and the query cursor. Each draws; none computes attention itself."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st
import torch

from explorer.figures import common
from explorer.mechanisms import Mechanism
from ui import compute


def param_form(mech: Mechanism, columns: int = 4, names: tuple[str, ...] | None = None, doc=None) -> dict:
    """Widgets for a mechanism's parameters (keys "p.<mech>.<param>"); returns their values.

    names: draw only these parameters (a page showing what one mode uses).
    doc: a causal model's document starts a mechanism's `causal` switch on.
    """
    if doc is not None and any(p.name == "causal" for p in mech.params):
        st.session_state.setdefault(f"p.{mech.key}.causal", doc.causal)
    values, cols = {}, st.columns(columns)
    shown = [p for p in mech.params if p.default is not None and (names is None or p.name in names)
             and p.name not in (mech.head_params or ())]
    for i, p in enumerate(shown):
        key = f"p.{mech.key}.{p.name}"
        st.session_state.setdefault(key, p.default)
        with cols[i % columns]:
            if p.choices is not None:
                values[p.name] = st.selectbox(p.name, p.choices, key=key, help=p.help)
            elif isinstance(p.default, bool):
                values[p.name] = st.checkbox(p.name, key=key, help=p.help)
            elif isinstance(p.default, int):
                values[p.name] = int(st.number_input(p.name, min_value=None if p.lo is None else int(p.lo),
                                                     max_value=None if p.hi is None else int(min(p.hi, 2**31 - 1)),
                                                     step=1, key=key, help=p.help))
            else:
                values[p.name] = float(st.number_input(p.name, min_value=p.lo, max_value=p.hi, key=key,
                                                       help=p.help, format="%.4g"))
    return values


def run_or_stop(key: str, doc, head: int, mech: Mechanism, params: dict):
    """The cached Result, or the parameter's error message and a stop."""
    try:
        with st.spinner(f"Running {mech.title}…"):
            return compute.run(key, head, mech.key, compute.params_json(params), doc)
    except ValueError as err:
        st.error(str(err))
        st.stop()


def zoom(n: int) -> tuple[int, int, int, int]:
    """The shared (q0, q1, k0, k1) window every map on every page shows (keys zoom_q, zoom_k)."""
    if n < 2:
        return 0, n, 0, n
    dragged = st.session_state.pop("_zoom_dragged", None)
    if dragged:  # a box dragged on a map last run: it becomes the window, its first row the query
        st.session_state["zoom_q"], st.session_state["zoom_k"] = dragged[:2], dragged[2:]
        st.session_state["query"] = dragged[0]
    for key in ("zoom_q", "zoom_k"):
        a, b = st.session_state.get(key, (0, n))
        if not 0 <= a < b <= n:
            st.session_state[key] = (0, n)
        else:
            st.session_state.setdefault(key, (a, b))
    with st.expander("Zoom: query and key window", expanded=False):
        if st.button("Whole text", key="zoom_reset"):
            st.session_state["zoom_q"] = st.session_state["zoom_k"] = (0, n)
        a, b = st.columns(2)
        rows = a.slider("Queries", 0, n, key="zoom_q")
        cols = b.slider("Keys", 0, n, key="zoom_k")
    (q0, q1), (k0, k1) = rows, cols
    q0, k0 = min(q0, n - 1), min(k0, n - 1)
    return q0, max(q1, q0 + 1), k0, max(k1, k0 + 1)


def map_style() -> tuple[str, bool]:
    a, b = st.columns(2)
    pool = a.radio("Pooling", ("mean", "max"), horizontal=True, key="pool",
                   help="mean shows where mass goes; max keeps single sharp peaks visible")
    st.session_state.setdefault("log_colour", True)
    log = b.checkbox("Log colour scale", key="log_colour")
    return pool, log


def window_map(key: str, doc, head: int, mech: str, params: str, window, grid: int):
    """Pooled map of a window: dense's whole-text map comes straight from the streamed pass."""
    if not mech and window == (0, doc.n, 0, doc.n):
        return compute.dense(key, head, grid, doc).map
    return compute.window_map(key, head, mech, params, window, grid, doc)


def _log_floor(mats, top: float) -> float:
    """Bottom of a shared log scale: the 1st percentile of positive weights, at most 6 decades down."""
    positive = torch.cat([m[m > 0].flatten() for m in mats])
    low = float(torch.quantile(positive[torch.randperm(positive.numel())[:100_000]], 0.01)) if positive.numel() else 0
    return max(math.log10(top) - 6, math.log10(low) if low > 0 else -12.0)


def map_npz(m) -> bytes:
    """A pooled map as NPZ: mean and max per bin, and the token edges of the bins."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, mean=m.mean.numpy(), max=m.max.numpy(), row_edges=np.array(m.row_edges),
                        col_edges=np.array(m.col_edges))
    return buffer.getvalue()


def series_csv(series: dict, positions=None) -> str:
    """Per-token series (as drawn along the text) as CSV, one column each."""
    frame = pd.DataFrame({name: torch.as_tensor(v).cpu().numpy() for name, v in series.items()})
    frame.insert(0, "position", positions if positions is not None else range(len(frame)))
    return frame.to_csv(index=False)


@dataclass
class Scale:
    """One colour scale for several maps: pooling, log or linear, and the range."""

    pool: str
    log: bool
    signed: bool
    zmin: float | None
    zmax: float | None


def shared_scale(maps: dict, diverging: bool = False) -> Scale:
    """Draw the pooling and colour controls and fit one scale to every map given."""
    pool, log = map_style()
    mats = [getattr(m, pool)[0] for m in maps.values()]
    signed = diverging and any(bool((m < 0).any()) for m in mats)
    top = max(float(m.abs().max()) for m in mats) or 1.0
    log = log and not signed
    if signed:
        return Scale(pool, False, True, None, None)
    return Scale(pool, log, False, *((_log_floor(mats, top), math.log10(top)) if log else (0.0, top)))


def draw_maps(doc, maps: dict, diverging: bool = False, scale: Scale | None = None,
              build=common.pooled_heatmap, decorate=None) -> None:
    """Pooled maps side by side (three to a row) on one colour scale.

    scale: share one fitted over more maps (shared_scale); build: the figure
    builder (pooled_heatmap's signature); decorate(fig, name, pooled_map):
    draw on top, e.g. segment boundaries.
    """
    scale = scale or shared_scale(maps, diverging)
    per_row = min(len(maps), 3)
    slots = [col for _ in range(0, len(maps), per_row) for col in st.columns(per_row)]
    for col, (name, m) in zip(slots, maps.items()):
        fig = build(getattr(m, scale.pool)[0], doc.tokens, m.row_edges, m.col_edges, title=name,
                    zmin=scale.zmin, zmax=scale.zmax, log=scale.log, **({"diverging": True} if scale.signed else {}))
        if decorate:
            decorate(fig, name, m)
        if build is common.pooled_heatmap:
            fig.update_layout(dragmode="select")
            event = col.plotly_chart(fig, width="stretch", key=f"map_{name}", on_select="rerun",
                                     selection_mode="box")
            _zoom_to_box(name, m, event)
        else:
            col.plotly_chart(fig, width="stretch", key=f"map_{name}")
        if m.per_bin:
            col.caption(f"Long window: each row bin pools {m.per_bin} evenly spaced queries.")
        col.download_button("Map data (NPZ)", map_npz(m), f"map-{name}.npz", "application/octet-stream",
                            key=f"npz_{name}")


def _zoom_to_box(name: str, m, event) -> None:
    """Turn a box dragged on a map into the shared window (applied by zoom() on the rerun)."""
    boxes = (event or {}).get("selection", {}).get("box") or []
    if not boxes or st.session_state.get("_zoom_box") == (name, str(boxes[0])):
        return
    st.session_state["_zoom_box"] = (name, str(boxes[0]))
    spans = []
    for axis, edges in (("y", m.row_edges), ("x", m.col_edges)):
        values = boxes[0].get(axis) or []
        if len(values) < 2:
            return
        last = len(edges) - 2
        a, b = (min(last, max(0, round(v))) for v in (min(values), max(values)))
        spans += [edges[a], edges[b + 1]]
    st.session_state["_zoom_dragged"] = tuple(spans)
    st.rerun()


def map_pair(key: str, doc, head: int, mech: Mechanism, params: dict, window, diverging: bool = False,
             **draw) -> None:
    """Dense and the mechanism over the same window, side by side (draw: build/decorate of draw_maps)."""
    grid = int(st.session_state.get("grid", 160))
    p = compute.params_json(params)
    with st.spinner("Pooling attention maps…"):
        maps = {"Dense": window_map(key, doc, head, "", "", window, grid),
                mech.title: window_map(key, doc, head, mech.key, p, window, grid)}
    draw_maps(doc, maps, diverging, **draw)


def fidelity_panel(key: str, doc, head: int, mech: Mechanism, params: dict) -> None:
    """How close the mechanism comes to dense: a summary table and the metrics along the text."""
    with st.spinner("Measuring fidelity against dense…"):
        fid = compute.fidelity_of(key, head, mech.key, compute.params_json(params), doc)
    summary = pd.DataFrame(fid.summary()).T
    summary.index = ["output relative error", "total variation", "top-8 recall", "reachable dense mass",
                     "entropy change (nats)"]
    st.dataframe(summary.style.format("{:.4f}"), width="stretch")
    sampled = "" if fid.rows.numel() == doc.n else f" (measured on {fid.rows.numel():,} evenly spaced queries)"
    st.caption("Per query: relative error of the output, total-variation distance between the two attention rows, "
               "share of dense's top-8 keys the mechanism also ranks top-8, and the share of dense mass on keys the "
               f"mechanism can reach at all{sampled}. Worst decile: the 90th percentile of errors, the 10th of recalls.")
    series = {"total variation": fid.tv[0], "top-8 recall": fid.recall[0], "reachable mass": fid.reach_mass[0]}
    st.plotly_chart(common.along_text(series, doc.tokens, title="Fidelity along the text",
                                      positions=fid.rows.tolist()), width="stretch", key="fidelity_along")
    st.download_button("Fidelity per query (CSV)", series_csv(series, fid.rows.tolist()), "fidelity-rows.csv",
                       "text/csv", key="fidelity_csv")


def query_picker(doc) -> int:
    """The query token every inspector follows (session key "query"), with a text search."""
    n = doc.n
    st.session_state["query"] = min(int(st.session_state.get("query", 0)), n - 1)
    a, b = st.columns([1, 2])
    a.number_input("Query token", 0, n - 1, key="query")
    find = b.text_input("Find a word", key="find", placeholder="jump to the first token containing…")
    if find.strip():
        needle = find.strip().lower()
        hits = [i for i, t in enumerate(doc.tokens) if needle in t.lower().lstrip("#Ġ▁")]
        if hits:
            st.caption(f"{len(hits)} match(es); showing the first at token {hits[0]}.")
            return hits[0]
        st.caption("No token matches.")
    return int(st.session_state["query"])


def topk_table(doc, weights: torch.Tensor, k: int = 10) -> pd.DataFrame:
    """The k keys a query weighs most, with their context in the text."""
    w, idx = torch.topk(weights, min(k, doc.n))
    rows = []
    for weight, i in zip(w.tolist(), idx.tolist()):
        a, b = doc.offsets[i]
        context = doc.text[max(0, a - 30) : b + 30].replace("\n", " ") if b > a else doc.tokens[i]
        rows.append({"position": i, "token": doc.tokens[i], "weight": weight, "context": context})
    return pd.DataFrame(rows)


def text_view(doc, weights: torch.Tensor, query: int, span: int = 300) -> None:
    """The text around the query, every token shaded by the weight the query puts on it."""
    start = max(0, query - span // 2)
    stop = min(doc.n, start + span)
    st.html(common.shaded_text(doc.text, doc.offsets, weights, start, stop, focus=query))
    if doc.n > span:
        st.caption(f"Showing tokens {start}–{stop - 1} of {doc.n:,} around the query; shading is scaled to the "
                   "largest weight in view.")


def structure_params(key: str, doc, mech: Mechanism, label: str, noun: str, length: str) -> tuple[dict, int | None]:
    """Parameters of a mechanism that cuts the text (segments, chunks): fixed length or the text's
    own sentences or paragraphs, turned into explicit boundaries. Returns (params, units found or None)."""
    from explorer.core import segments

    left, right = st.columns([2, 1])
    mode = left.radio(label, segments.MODES, horizontal=True, key=f"{mech.key}_mode")
    split = right.checkbox(f"Split {noun} longer than {length}", value=True, key=f"{mech.key}_split",
                           disabled=mode == segments.MODES[0])
    params = param_form(mech, doc=doc)
    if mode == segments.MODES[0]:
        return params, None
    with st.spinner(f"Finding the {mode}…"):
        params["boundaries"], units = compute.boundaries(key, mode, params[length], split, doc)
    return params, units
