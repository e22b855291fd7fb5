"""Recurrent memory (Transformer-XL, optionally compressive): the segment timeline and
what each segment reaches, how far back each query sees, how much of dense attention
lies beyond reach, and the compressed slots with the tokens they summarize."""
import streamlit as st
import torch

from explorer.analysis.memory import dense_mass_by_region
from explorer.core.rows import sample_rows
from explorer.figures import common
from explorer.figures import memory as figs
from explorer.mechanisms import REGISTRY
from ui import charts, compute, fidelity, forms, inspector, maps
from ui.cache import computation

MECH = REGISTRY["memory"]
REGION_ROWS = 2048  # evenly spaced queries whose dense attention is split by region


@computation()
def region_mass(run, rows: int):
    """Dense attention's share on each region of the memory layout, for evenly spaced queries (the run is memory's)."""
    q, k, _ = compute.qkv(run)
    layout = compute.result(run).structure
    picked = sample_rows(run.doc.n, rows)
    return {name: m[0] for name, m in dense_mass_by_region(q, k, layout, picked, run.doc.causal).items()}

run, res = forms.header(MECH)
doc, s = run.doc, res.structure
lookback = torch.arange(doc.n) - s.reach_start
forms.metrics(res, {
    "Segments": (f"{len(s.segments):,}", f"of {s.segment} tokens (clamped to the text length)"),
    "Compressed slots": (f"{len(s.slot_spans):,}", f"all slots ever made; each segment sees the newest "
                         f"{s.compressed_len}"),
    "Mean lookback": (f"{float(lookback.float().mean()):,.0f} tokens", None)})

charts.section("Segments and their reach",
               "One line per segment: blue is the segment itself, orange the cached memory, purple the "
               "compressed memory. Hover a bar for its tokens and text. Zoom picks the segments (by their "
               "queries) and the key range.")
window = maps.zoom(doc.n)
charts.show(st, figs.segment_timeline(s, doc.pieces, rows=window[:2], cols=window[2:]),
                key="memory_timeline")

left, right = st.columns(2)
with left:
    st.markdown("**How far back each query can see**")
    st.caption("Tokens between a query and the earliest key it can reach. It climbs within a segment and falls back "
               "at each new segment; compression stretches it by the ratio.")
    charts.show(st, common.along_text({"lookback": lookback}, doc.pieces, y_title="tokens"),
                    key="memory_lookback")
with right:
    st.markdown("**Where dense attention falls**")
    rows = sample_rows(doc.n, REGION_ROWS)
    mass = region_mass(run, REGION_ROWS)
    beyond = mass["older"] + mass["later"]
    st.caption(f"For {rows.numel():,} evenly spaced queries, dense attention's share on each region. 'older' and "
               f"'later' lie beyond reach: on average {float(beyond.mean()):.1%} of dense mass.")
    charts.show(st, common.along_text(mass, doc.pieces, positions=rows.tolist(), stacked=True, y_title="share",
                                      mechanisms=False),
                    width="stretch", key="memory_regions")

charts.section("Dense and recurrent memory",
               "The same window of dense attention and of the memory's effective weights, on shared scales; the "
               "memory map is zero outside each segment's reach (a staircase along the diagonal).")
maps.pair(run, MECH.title, window)

charts.section("One query: its reach and the compressed slots",
               "The top strip colours every key by what it is to this query (older, compressed, memory, segment, "
               "later); the bottom strip alternates shades over the compressed slots its segment sees. The table lists "
               "those slots with the text each averages and the weight the query gives it.")
query = inspector.query_picker(doc)
row = compute.query_row(run, query)
charts.show(st, figs.query_reach(s, doc.pieces, query), key="memory_query_reach")
slots = figs.slot_table(s, doc.pieces, query // s.segment, row)
if len(slots):
    st.dataframe(slots, hide_index=True)
else:
    st.caption("This query's segment sees no compressed slots (set compressed slots above 0; the memory must "
               "overflow first).")
inspector.text_view(doc, row, query, who=MECH.title)

charts.section("How far from dense")
fidelity.panel(run)
