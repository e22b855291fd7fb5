"""Attention maps on every page: the shared zoom window, the colour controls, and maps drawn
side by side on the colour scales they share, each a box-drag away from zooming every map into it."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from explorer.figures import common
from explorer.figures import grid as grids
from explorer.figures.colours import title_of
from explorer.figures.scale import MODES, Scale, describe, fit_scales, suggest
from ui import charts, compute, downloads, settings
from ui.state import Run

WHOLE = (0, 2**31 - 1)  # a window's default: from the first token to the last, whatever the text
ZOOM_Q = settings.Setting("zoom_q", WHOLE)
ZOOM_K = settings.Setting("zoom_k", WHOLE)
POOL = settings.Setting("pool", "mean", choices=("mean", "max"))
COLOUR = settings.Setting("colour", "auto", choices=("auto", *MODES))
ROBUST = settings.Setting("robust_range", True)
GRID = settings.Setting("grid", 160, lo=8, hi=1024)
QUERY = settings.Setting("query", -1, lo=-1, hi=2**31 - 1)  # -1: the first token that carries content
SETTINGS = (ZOOM_Q, ZOOM_K, POOL, COLOUR, ROBUST, GRID, QUERY)
COLOURING = {"auto": "automatic", "log": "log weight", "relative": "relative to uniform", "linear": "linear"}
settings.register(*SETTINGS)


def grid() -> int:
    """Bins per axis of every map (the display resolution)."""
    return int(settings.value(GRID))


def _in_text(setting: settings.Setting, n: int) -> tuple[int, int]:
    """The setting's window inside 0..n; a value from a link that does not fit this text is named."""
    a, b = st.session_state.get(setting.key, WHOLE)
    fitted = (min(a, n - 1), min(b, n))
    if (a, b) != WHOLE and (a, b) != fitted:
        axis = "query" if setting is ZOOM_Q else "key"
        st.caption(f"The {axis} window {a}–{b} lies beyond this text's {n:,} tokens; showing "
                   f"{fitted[0]}–{fitted[1]}.")
    return fitted


def zoom(n: int) -> tuple[int, int, int, int]:
    """The shared (q0, q1, k0, k1) window every map on every page shows (settings zoom_q, zoom_k)."""
    if n < 2:
        return 0, n, 0, n
    dragged = st.session_state.pop("_zoom_dragged", None)
    if dragged:  # a box dragged on a map last run: it becomes the window, its first row the query
        st.session_state["zoom_q"], st.session_state["zoom_k"] = dragged[:2], dragged[2:]
        st.session_state["query"], st.session_state["selection"] = dragged[0], ""  # ui.inspector's settings
    for s in (ZOOM_Q, ZOOM_K):
        st.session_state[s.key] = _in_text(s, n)
    with st.expander("Zoom: query and key window", expanded=False):
        if st.button("Whole text", key="zoom_reset"):
            st.session_state["zoom_q"] = st.session_state["zoom_k"] = (0, n)
        a, b = st.columns(2)
        rows = a.slider("Queries", 0, n, key="zoom_q")
        cols = b.slider("Keys", 0, n, key="zoom_k")
    (q0, q1), (k0, k1) = rows, cols
    q0, k0 = min(q0, n - 1), min(k0, n - 1)
    return q0, max(q1, q0 + 1), k0, max(k1, k0 + 1)


@dataclass(frozen=True)
class Colouring:
    """What the colour controls chose: pooling, colouring ("auto" or a MODES entry), robust range."""

    pool: str
    chosen: str
    robust: bool


def controls() -> Colouring:
    """Draw the pooling and colour controls (once per page: a refreshing fragment fits the scales
    under them, so no stale copy of them stays on screen)."""
    for s in (POOL, COLOUR, ROBUST):
        st.session_state.setdefault(s.key, s.default)
    a, b, c = st.columns([1, 2, 1])
    pool = a.radio("Pooling", POOL.choices, horizontal=True, key=POOL.key,
                   help="mean shows where mass goes; max keeps single sharp peaks visible")
    chosen = b.radio("Colour", COLOUR.choices, horizontal=True, key=COLOUR.key, format_func=COLOURING.get,
                     help="log weight: log10 of the weight; relative to uniform: log10 of the weight times the keys "
                          "a query can see, so 0 is exactly uniform; linear: the weight itself")
    robust = c.checkbox("Robust range", key=ROBUST.key, help="colours span the 1st to 99th percentile of the maps, "
                        "so a few extreme bins do not flatten the rest")
    return Colouring(pool, chosen, robust)


def scales(maps: dict, colouring: Colouring | None = None, diverging: bool = False, causal: bool = False,
           window: int | None = None) -> list[tuple[tuple[str, ...], Scale]]:
    """Fit the maps' colour scales (which share one: fit_scales) and say in a caption what is drawn.

    colouring: the controls' choice (drawn here when None). "automatic" picks, from the first map
    (dense), the colouring that shows its structure: log weight, or relative to uniform when the
    map spans less than a decade."""
    colouring = colouring or controls()
    mats = {name: getattr(m, colouring.pool)[0] for name, m in maps.items()}
    edges = {name: m.row_edges for name, m in maps.items()}
    n = next(iter(maps.values())).col_edges[-1] if maps else None
    first = next(iter(maps), None)
    mode = colouring.chosen
    if mode == "auto":
        mode = suggest(mats[first], edges[first], n, causal)
    groups = fit_scales(mats, colouring.pool, mode, diverging, colouring.robust, edges, n, causal, window)
    why = f" ({title_of(first)} spans less than a decade)" if colouring.chosen == "auto" and mode == "relative" else ""
    said = f"{'Automatic' if colouring.chosen == 'auto' else 'Colour'}: {COLOURING[mode]}{why}."
    st.caption(" ".join(filter(None, (said, describe(groups)))))
    return groups


def draw(doc, maps: dict, diverging: bool = False, groups: list | None = None, colouring: Colouring | None = None,
         build=common.pooled_heatmap, decorate=None) -> None:
    """Pooled maps side by side (three to a row), each with the colour bar of its scale.

    groups: scales fitted over more maps (scales); colouring: the controls' choice when drawn
    already; build: the figure builder (pooled_heatmap's signature); decorate(fig, name,
    pooled_map): draw on top, e.g. segment boundaries.
    """
    groups = groups or scales(maps, colouring, diverging, doc.causal, doc.model_rule.window)
    scale_of = {name: scale for names, scale in groups for name in names}
    per_row = min(len(maps), 3)
    slots = [col for _ in range(0, len(maps), per_row) for col in st.columns(per_row)]
    for col, (name, m) in zip(slots, maps.items()):
        scale = scale_of[name]
        fig = build(scale.values(getattr(m, scale.pool)[0], m.row_edges, doc.n), doc.pieces, m.row_edges,
                    m.col_edges, title=name, zmin=scale.zmin, zmax=scale.zmax, log=False, label=scale.label,
                    **({"diverging": True} if scale.signed else {}))
        fig.update_traces(colorbar_title_side="right", colorbar_thickness=14, selector={"type": "heatmap"})
        if decorate:  # (a colour bar's title turned on its side: side by side, maps keep their width)
            decorate(fig, name, m)
        if build is common.pooled_heatmap:
            fig.update_layout(dragmode="select")
            event = charts.show(col, fig, key=f"map_{name}", on_select="rerun", selection_mode="box")
            _zoom_to_box(name, m, event)
        else:
            charts.show(col, fig, key=f"map_{name}")
        if m.per_bin and m.per_bin < max(b - a for a, b in zip(m.row_edges, m.row_edges[1:])):
            col.caption(f"Long window: each row bin pools {m.per_bin} evenly spaced queries.")
        col.download_button("Map data (NPZ)", downloads.map_npz(m), f"map-{name}.npz", "application/octet-stream",
                            key=f"npz_{name}")


def _zoom_to_box(name: str, m, event) -> None:
    """Turn a box dragged on a map into the shared window (applied by zoom() on the rerun)."""
    boxes = (event or {}).get("selection", {}).get("box") or []
    if boxes:
        _zoom_to(name, boxes[0], common.box_window(boxes[0], m.row_edges, m.col_edges))


def _zoom_to(name: str, box: dict, window) -> None:
    if window is None or st.session_state.get("_zoom_box") == (name, str(box)):
        return
    st.session_state["_zoom_box"] = (name, str(box))
    (q0, q1), (k0, k1) = window
    st.session_state["_zoom_dragged"] = (q0, q1, k0, k1)
    st.rerun()


def draw_grid(doc, maps: dict, diverging: bool = False, per_row: int = 2, key: str = "maps") -> None:
    """Several maps as one figure, `per_row` to a row, with a colour bar for each scale they use;
    a box dragged on any of them zooms every map into it."""
    groups = scales(maps, None, diverging, doc.causal, doc.model_rule.window)
    fig = grids.map_grid(maps, doc.pieces, groups, per_row=per_row, row_height=max(260, 880 // per_row), n=doc.n)
    event = charts.show(st, fig, key=key, on_select="rerun", selection_mode="box")
    for box in (event or {}).get("selection", {}).get("box") or []:
        picked = grids.selected_window(fig, maps, box)
        if picked:
            _zoom_to(picked[0], box, picked[1:])
    if any(m.per_bin for m in maps.values()):
        st.caption("Long window: mechanisms' maps pool evenly spaced queries per row bin "
                   f"({next(m.per_bin for m in maps.values() if m.per_bin)} each).")


def pair(run: Run, title: str, window, diverging: bool = False, **style) -> None:
    """Dense and the run's mechanism over the same window, side by side (style: build/decorate of draw)."""
    maps = {"Dense": compute.window_map(run.reference(), window, grid()),
            title: compute.window_map(run, window, grid())}
    draw(run.doc, maps, diverging, **style)


def pair_section(heading: str, caption: str, run: Run, title: str, diverging: bool = False, **style) -> None:
    """The comparison most pages make under a heading of their own: dense and the run's mechanism
    over the zoomed window (see pair)."""
    charts.section(heading, caption)
    pair(run, title, zoom(run.doc.n), diverging, **style)
