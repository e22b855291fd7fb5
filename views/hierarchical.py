"""Hierarchical attention: the level tree over the text, attention at each level, what one
token receives from each level, and the combined weights beside dense."""
import json

import streamlit as st
import torch

from explorer.figures import common, segments as figures
from explorer.mechanisms import REGISTRY
from explorer.analysis.hierarchical import by_level, level_maps
from ui import compute, panels, state

MECH = REGISTRY["hierarchical"]

key, doc, head = state.require_doc()
st.title("Hierarchical attention")
st.caption("A token reads its own chunk token by token; the rest of the text it reads through pooled nodes - the "
           "other chunks of its group, then the other groups, coarser the farther away (a tree up to the whole "
           "document). Everything shares one softmax, and a node's weight is shared evenly by the tokens it covers.")


@st.cache_resource(show_spinner=False, max_entries=16)
def maps_by_level(doc_key: str, head: int, params: str, parts: int, window: tuple, grid: int, _doc):
    q, k, v = _doc.head(head)
    q0, q1, k0, k1 = window
    return level_maps(by_level(q, k, v, **json.loads(params)), parts, 1, _doc.n, rows=(q0, q1),
                      cols=(k0, k1), grid=grid, per_bin=4, device=q.device)


@st.cache_resource(show_spinner=False, max_entries=32)
def row_by_level(doc_key: str, head: int, params: str, query: int, _doc) -> torch.Tensor:
    q, k, v = _doc.head(head)
    return by_level(q, k, v, **json.loads(params))([query])[0, :, 0].cpu()


def part_names(count: int) -> list[str]:
    return ["own chunk (tokens)"] + [f"level {level} nodes" for level in range(1, count)]


# ---------------------------------------------------------------- parameters
params, _ = panels.structure_params(key, doc, MECH, "Chunks from", "chunks", "chunk_length")
p = compute.params_json(params)

res = panels.run_or_stop(key, doc, head, MECH, params)
levels = res.structure["levels"]
mass = res.structure["level_mass"][0]  # [parts, n]
names = part_names(mass.shape[0])
a, b, c, d, e = st.columns(5)
a.metric("Tokens", f"{doc.n:,}")
b.metric("Chunks", f"{levels[0]['starts'].numel():,}")
c.metric("Levels above the tokens", len(levels))
d.metric("Run (this head)", f"{res.cost['seconds']:.2f} s")
e.metric("Work vs dense", f"{res.cost['flops'] / res.cost['dense_flops']:.3f}×")

# ---------------------------------------------------------------- the tree
st.subheader("The hierarchy over the text")
st.caption("One strip per level, from the chunks down to the whole document; shades alternate from node to node "
           "(grey: a pooled stretch of the strip holding several nodes). Hover for a node's tokens and text.")
strips = {("document" if i == len(levels) - 1 else f"level {i + 1}"): lv["starts"] for i, lv in enumerate(levels)}
st.plotly_chart(figures.span_strips(strips, doc.n, doc.tokens), width="stretch", key="hier_tree")

st.subheader("Where each query's attention comes from")
st.caption("For every query, the share of its attention that comes from its own chunk's tokens and from the nodes "
           "of each level. The shares add up to one.")
st.plotly_chart(common.along_text(dict(zip(names, mass)), doc.tokens, y_title="share"), width="stretch",
                key="hier_mass_along")

# ---------------------------------------------------------------- maps
st.subheader("Combined weights beside dense, and attention at each level")
st.caption("Top: dense attention and the combined effective weights of hierarchical attention over the zoomed "
           "window. Below: what each level alone puts on the original keys (a node's weight is spread over its "
           "tokens, so coarse levels show as flat blocks); they add up to the combined map. White lines are the "
           "chunk boundaries (on level maps, that level's nodes) when few enough fall in view. One colour scale.")
window = panels.zoom(doc.n)
grid = int(st.session_state["grid"])
with st.spinner("Pooling dense, combined and per-level attention…"):
    pair = {"Dense": panels.window_map(key, doc, head, "", "", window, grid),
            "Hierarchical (combined)": panels.window_map(key, doc, head, MECH.key, p, window, grid)}
    per_level = dict(zip(names, maps_by_level(key, head, p, len(names), window, grid, doc)))
scale = panels.shared_scale({**pair, **per_level})
spans = {name: levels[max(0, i - 1)]["starts"] for i, name in enumerate(per_level)}
panels.draw_maps(doc, pair, scale=scale,
                 decorate=lambda fig, name, m: figures.add_boundaries(fig, levels[0]["starts"], m.row_edges, m.col_edges))
panels.draw_maps(doc, per_level, scale=scale,
                 decorate=lambda fig, name, m: (fig.update_layout(height=380),
                                                figures.add_boundaries(fig, spans[name], m.row_edges, m.col_edges)))

# ---------------------------------------------------------------- one token
st.subheader("What one token receives from each level")
st.caption("Pick a query token: the bars split its attention by level; the chart shows what each level puts on "
           "every token of the text beside dense attention's row; the text is shaded by the combined weight.")
query = panels.query_picker(doc)
levels_row = row_by_level(key, head, p, query, doc)
dense_row = compute.query_row(key, head, "", "", query, doc)
left, right = st.columns([1, 2])
left.plotly_chart(figures.level_bars(mass[:, query], names, title=f"Token {query}: {doc.tokens[query]}"),
                  width="stretch", key="hier_query_bars")
right.plotly_chart(common.along_text({"dense": dense_row, **dict(zip(names, levels_row))}, doc.tokens,
                                     y_title="weight", title=f"Attention of token {query} by level"),
                   width="stretch", key="hier_query_row")
panels.text_view(doc, levels_row.sum(0), query)

st.subheader("How far from dense")
panels.fidelity_panel(key, doc, head, MECH, params)
