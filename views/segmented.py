"""Segmented attention: segment boundaries over the text and on the attention map, how much
of dense attention crosses them, and what the inter-segment summaries win back."""
import json

import pandas as pd
import streamlit as st
import torch

from explorer.core import segments
from explorer.figures import common, segments as figures
from explorer.mechanisms import REGISTRY
from explorer.analysis.segmented import outside_mass
from ui import compute, panels, state

MECH = REGISTRY["segmented"]

key, doc, head = state.require_doc()
st.title("Segmented attention")
st.caption("Each token attends only to the tokens of its own segment (fixed length, or the text's sentences or "
           "paragraphs), plus `overlap` tokens before it; with `summaries` it also sees one mean-pooled key and value "
           "per other segment, whose weight is shared evenly by that segment's tokens. Red lines and alternating "
           "shades mark the segments on every chart.")


@st.cache_resource(show_spinner=False, max_entries=16)
def crossing(doc_key: str, head: int, params: str, _doc) -> torch.Tensor:
    """Share of dense attention each query sends beyond its own window (no summaries involved)."""
    q, k, _ = _doc.head(head)
    p = json.loads(params)
    lse = compute.dense(doc_key, head, int(st.session_state["grid"]), _doc).lse
    return outside_mass(q, k, lse, p["segment_length"], p["overlap"], p["causal"], p.get("boundaries"))[0].cpu()


@st.cache_data(show_spinner=False, max_entries=8)
def segment_table(doc_key: str, head: int, params: str, _lost: torch.Tensor, _doc) -> pd.DataFrame:
    """One row per segment: token span, character span in the text, size, dense mass crossing out."""
    res = compute.run(doc_key, head, MECH.key, params, _doc)
    starts, ends = res.structure["starts"], res.structure["ends"]
    chars = segments.char_spans(starts, _doc.offsets)
    crossing_mean = segments.pool_mean(_lost.reshape(1, -1, 1), starts)[0, :, 0]
    return pd.DataFrame({
        "first token": starts.tolist(), "last token": (ends - 1).tolist(), "tokens": (ends - starts).tolist(),
        "first char": [a for a, _ in chars], "end char": [b for _, b in chars],
        "dense mass beyond": crossing_mean.tolist(),
        "text": [_doc.text[a:b][:80].replace("\n", " ") for a, b in chars],
    })


# ---------------------------------------------------------------- parameters
params, units = panels.structure_params(key, doc, MECH, "Segment by", "segments", "segment_length")

res = panels.run_or_stop(key, doc, head, MECH, params)
starts, sizes = res.structure["starts"], res.structure["sizes"]
a, b, c, d, e = st.columns(5)
a.metric("Tokens", f"{doc.n:,}")
b.metric("Segments", f"{starts.numel():,}")
c.metric("Median segment", f"{int(sizes.median())} tokens")
d.metric("Run (this head)", f"{res.cost['seconds']:.2f} s")
e.metric("Work vs dense", f"{res.cost['flops'] / res.cost['dense_flops']:.3f}×")
if units == 1:
    mode = st.session_state["segmented_mode"]
    st.info(f"This text has no {mode[:-1]} breaks: it is one {mode[:-1]}"
            + (", cut only at segment_length." if starts.numel() > 1 else ", so this is dense attention."))

st.plotly_chart(figures.span_strips({"segments": starts}, doc.n, doc.tokens,
                                    title="Segments over the text (grey: a pooled stretch holding several)"),
                width="stretch", key="segmented_strip")

# ---------------------------------------------------------------- maps
st.subheader("Attention maps with the segment boundaries")
st.caption("Dense attention (left) and segmented attention (right) over the same window, on one colour scale; "
           "white lines are segment boundaries (drawn when at most 120 fall in the window - zoom in to see them). "
           "Without summaries the right map is zero outside the diagonal blocks.")
p = compute.params_json(params)
window = panels.zoom(doc.n)
drawn = []
panels.map_pair(key, doc, head, MECH, params, window,
                decorate=lambda fig, name, m: drawn.append(figures.add_boundaries(fig, starts, m.row_edges, m.col_edges)))
if None in drawn:
    st.caption("Too many boundaries in this window to draw; zoom in.")

# ---------------------------------------------------------------- crossing
st.subheader("How much of dense attention crosses the boundaries")
st.caption("For every query, the share of its dense attention that lands outside what segmented attention lets it "
           "see directly (its segment plus the overlap): exactly what is lost without the summaries. Left: along "
           "the text; right: averaged over each segment's queries.")
with st.spinner("Measuring dense attention across boundaries…"):
    lost = crossing(key, head, p, doc)
st.metric("Dense mass outside the own segment (mean over queries)", f"{float(lost.mean()):.1%}")
left, right = st.columns(2)
marks = starts[1:].tolist() if starts.numel() <= 60 else None
left.plotly_chart(common.along_text({"dense mass beyond the segment": lost}, doc.tokens, y_title="share",
                                    marks=marks), width="stretch", key="segmented_cross_along")
right.plotly_chart(figures.per_segment(lost, starts, doc.n, doc.tokens, y_title="share",
                                       title="Per segment"), width="stretch", key="segmented_cross_bars")
with st.expander(f"The {starts.numel():,} segments: token and character spans"):
    st.dataframe(segment_table(key, head, p, lost, doc), width="stretch", hide_index=True)

# ---------------------------------------------------------------- with and without summaries
st.subheader("With and without the inter-segment step")
st.caption("The same segments run twice, without and with the per-segment summaries. The table compares both with "
           "dense (means over queries); the chart sets the mass the summaries take beside the dense mass that "
           "crosses the boundaries, which is what they stand in for.")
variants = {"without summaries": {**params, "summaries": False}, "with summaries": {**params, "summaries": True}}
with st.spinner("Running both variants and measuring them against dense…"):
    runs = {name: panels.run_or_stop(key, doc, head, MECH, v) for name, v in variants.items()}
    fids = {name: compute.fidelity_of(key, head, MECH.key, compute.params_json(v), doc) for name, v in variants.items()}
table = pd.DataFrame({name: {metric: vals["mean"] for metric, vals in f.summary().items()} for name, f in fids.items()})
table.index = ["output relative error", "total variation", "top-8 recall", "reachable dense mass",
               "entropy change (nats)"]
st.dataframe(table.style.format("{:.4f}"), width="stretch")
left, right = st.columns(2)
left.plotly_chart(common.along_text({"dense mass beyond the segment": lost,
                                     "mass on summaries": runs["with summaries"].structure["summary_mass"][0]},
                                    doc.tokens, y_title="share", title="What the summaries stand in for"),
                  width="stretch", key="segmented_summary_mass")
right.plotly_chart(common.along_text({name: f.tv[0] for name, f in fids.items()}, doc.tokens,
                                     positions=fids["with summaries"].rows.tolist(), y_title="total variation",
                                     title="Distance from dense along the text"),
                   width="stretch", key="segmented_tv_both")

# ---------------------------------------------------------------- inspector
st.subheader("Token inspector")
st.caption("The text around a query with its segments tinted in turn (red bars at boundaries), then shaded by the "
           "weight segmented attention gives each token; the chart sets its row beside dense's over the whole text.")
query = panels.query_picker(doc)
lo, hi = max(0, query - 150), min(doc.n, query + 150)
left, right = st.columns(2)
with left:
    st.markdown("**Segments around the query**")
    st.html(figures.segmented_text(doc.text, doc.offsets, starts, lo, hi, focus=query))
row = compute.query_row(key, head, MECH.key, p, query, doc)
dense_row = compute.query_row(key, head, "", "", query, doc)
with right:
    st.markdown("**Weights of segmented attention**")
    panels.text_view(doc, row, query)
st.plotly_chart(common.along_text({"dense": dense_row, MECH.title: row}, doc.tokens, y_title="weight",
                                  title=f"Attention of token {query} over the text"),
                width="stretch", key="segmented_row")

st.subheader("How far from dense")
panels.fidelity_panel(key, doc, head, MECH, params)
