"""Recurrent memory (Transformer-XL, optionally compressive): the segment timeline and
what each segment reaches, how far back each query sees, how much of dense attention
lies beyond reach, and the compressed slots with the tokens they summarize."""
import streamlit as st
import torch

from explorer.figures import common, memory as figs
from explorer.mechanisms import REGISTRY
from explorer.analysis.memory import dense_mass_by_region
from explorer.core.rows import sample_rows
from ui import compute, panels, state

MECH = REGISTRY["memory"]
REGION_ROWS = 2048  # evenly spaced queries whose dense attention is split by region


@st.cache_resource(show_spinner=False, max_entries=16)
def regions(doc_key: str, head: int, params: str, _doc, _res):
    q, k, _ = _doc.head(head)
    rows = sample_rows(_doc.n, REGION_ROWS)
    return rows, {name: m[0] for name, m in dense_mass_by_region(q, k, _res.structure, rows, _doc.causal).items()}


key, doc, head = state.require_doc()
st.title("Recurrent memory (Transformer-XL)")
st.caption("The text is read in segments. Each segment's queries attend to the segment itself and to a cached memory "
           "of the tokens just before it; with `compressed` > 0, memories older than that are mean-pooled, "
           "`ratio` tokens per slot, into a compressed memory (Compressive Transformer), and a slot's weight is shared "
           "by the tokens it summarizes. Here the cache holds this layer's own keys and values of earlier tokens, "
           "not states recomputed by a stack of layers.")

params = panels.param_form(MECH, doc=doc)
res = panels.run_or_stop(key, doc, head, MECH, params)
s = res.structure
p_json = compute.params_json(params)
lookback = torch.arange(doc.n) - s["reach_start"]

a, b, c, d, e = st.columns(5)
a.metric("Segments", f"{len(s['segments']):,}", help=f"of {s['segment']} tokens (clamped to the text length)")
b.metric("Compressed slots", f"{len(s['slot_spans']):,}", help="all slots ever made; each segment sees the newest "
         f"{s['compressed_len']}")
c.metric("Mean lookback", f"{float(lookback.float().mean()):,.0f} tokens")
d.metric("Work vs dense", f"{res.cost['flops'] / res.cost['dense_flops']:.3f}×")
e.metric("Run (this head)", f"{res.cost['seconds']:.2f} s")

st.subheader("Segments and their reach")
st.caption("One line per segment: blue is the segment itself, orange the cached memory, purple the compressed "
           "memory. Hover a bar for its tokens and text. Zoom picks the segments (by their queries) and the key range.")
window = panels.zoom(doc.n)
st.plotly_chart(figs.segment_timeline(s, doc.tokens, rows=window[:2], cols=window[2:]), width="stretch",
                key="memory_timeline")

left, right = st.columns(2)
with left:
    st.markdown("**How far back each query can see**")
    st.caption("Tokens between a query and the earliest key it can reach. It climbs within a segment and falls back "
               "at each new segment; compression stretches it by the ratio.")
    st.plotly_chart(common.along_text({"lookback": lookback}, doc.tokens, y_title="tokens"), width="stretch",
                    key="memory_lookback")
with right:
    st.markdown("**Where dense attention falls**")
    with st.spinner("Splitting dense attention by region…"):
        rows, mass = regions(key, head, p_json, doc, res)
    beyond = mass["older"] + mass["later"]
    st.caption(f"For {rows.numel():,} evenly spaced queries, dense attention's share on each region. 'older' and "
               f"'later' lie beyond reach: on average {float(beyond.mean()):.1%} of dense mass.")
    st.plotly_chart(common.along_text(mass, doc.tokens, positions=rows.tolist(), stacked=True, y_title="share"), width="stretch",
                    key="memory_regions")

st.subheader("Dense and recurrent memory")
st.caption("The same window of dense attention and of the memory's effective weights, on one colour scale; the "
           "memory map is zero outside each segment's reach (a staircase along the diagonal).")
panels.map_pair(key, doc, head, MECH, params, window)

st.subheader("One query: its reach and the compressed slots")
st.caption("The top strip colours every key by what it is to this query (older, compressed, memory, segment, "
           "later); the bottom strip alternates shades over the compressed slots its segment sees. The table lists "
           "those slots with the text each averages and the weight the query gives it.")
query = panels.query_picker(doc)
row = compute.query_row(key, head, MECH.key, p_json, query, doc)
st.plotly_chart(figs.query_reach(s, doc.tokens, query), width="stretch", key="memory_query_reach")
segment = query // s["segment"]
slots = figs.slot_table(s, doc.tokens, segment, row)
if len(slots):
    st.dataframe(slots, width="stretch", hide_index=True)
else:
    st.caption("This query's segment sees no compressed slots (set `compressed` > 0, and memory must overflow first).")
panels.text_view(doc, row, query)

st.subheader("How far from dense")
panels.fidelity_panel(key, doc, head, MECH, params)
