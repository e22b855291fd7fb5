"""Relative position: T5, ALiBi, Shaw and RoPE biases on the model's own queries and keys,
the bias by distance and over the text, and what it does to attention."""
import json

import streamlit as st
import torch

from explorer.core import attention
from explorer.figures import common, relpos as figures
from explorer.analysis import relpos as relpos_views
from explorer.mechanisms import REGISTRY, relpos
from ui import compute, panels, state

MECH = REGISTRY["relpos"]
EXPLAIN = {
    "t5": "T5 adds a learned number per head to each score, looked up by the distance's bucket: one bucket per "
          "distance near the query, log-spaced buckets farther out, one shared bucket beyond max_distance.",
    "alibi": "ALiBi subtracts slope × |distance| from each score; every head has its own slope (1/2, 1/4, … for "
             "8 heads), so some heads stay local and others read far.",
    "shaw": "Shaw et al. add q · a(distance) to each score, with one embedding a per distance clipped to ±clip: the "
            "bias depends on the query's content, so its curve here is an average over queries.",
    "rope": "RoPE turns each pair of query and key dimensions by an angle proportional to the position, so the score "
            "depends on the distance through the angle between them; its curve here is the average change of score.",
}

key, doc, head = state.require_doc()
st.title("Relative position")
st.caption("The same dense attention over the text, with a score that also depends on how far the key is from the "
           "query. The bias is computed only for what is drawn: the distances on the curve and the window on the map.")


@st.cache_resource(show_spinner=False, max_entries=4)
def t5_checkpoint(name: str):
    return relpos.t5_checkpoint_values(name)


@st.cache_resource(show_spinner=False, max_entries=16)
def bias_curves(doc_key: str, params: str, lo: int, hi: int, _doc):
    """Position term against distance for every head of the layer (T5 checkpoints: the heads they have)."""
    p = json.loads(params)
    heads = _doc.heads if p.get("t5_values") is None else min(_doc.heads, len(p["t5_values"][0]))
    return relpos_views.bias_curve(_doc.q[:heads], _doc.k[:heads], relpos.curve_distances(lo, hi), **p)


@st.cache_resource(show_spinner=False, max_entries=16)
def bias_window(doc_key: str, head: int, params: str, window: tuple, grid: int, _doc):
    q, k, _ = _doc.head(head)
    q0, q1, k0, k1 = window
    return relpos_views.bias_map(q, k, rows=(q0, q1), cols=(k0, k1), grid=grid, per_bin=4,
                           **MECH.for_head(json.loads(params), head, _doc.heads))


@st.cache_resource(show_spinner=False, max_entries=16)
def by_distance(doc_key: str, head: int, params: str, _doc):
    """Mean attention weight by |distance|: the model's own (dense) and with the bias."""
    q, k, _ = _doc.head(head)
    res = compute.run(doc_key, head, MECH.key, params, _doc)
    own = relpos_views.attention_by_distance(lambda rows: attention.weights(q, k, rows, _doc.causal), _doc.n, 1,
                                       causal=_doc.causal, device=q.device)
    biased = relpos_views.attention_by_distance(res.weights, _doc.n, 1, causal=res.params["causal"], device=q.device)
    return {"model's own attention (dense)": own, "with the bias": biased}


@st.cache_resource(show_spinner=False, max_entries=8)
def rope_decay(doc_key: str, head: int, theta: float, lo: int, hi: int, _doc):
    q, k, _ = _doc.head(head)
    return relpos_views.rope_decay(q, k, theta, relpos.curve_distances(lo, hi))


# ---------------------------------------------------------------- parameters
kind = st.session_state.get(f"p.{MECH.key}.kind", MECH.defaults()["kind"])
shown = {"kind", "causal"} | ({"scale"} if kind != "rope" else set()) | set(relpos.KIND_PARAMS[kind])
values = panels.param_form(MECH, doc=doc, names=tuple(shown))
params = {**MECH.defaults(), **values}  # every head's curve needs the full set; compute.run adds the head
params.pop("t5_values")
st.caption(EXPLAIN[values["kind"]])
if values["kind"] == "t5":
    name = st.text_input("T5 checkpoint for the bucket values (optional)", key="relpos_t5",
                         placeholder="a local folder or a cached Hugging Face id, e.g. t5-small",
                         help="Reads the encoder's relative_attention_bias; empty uses the profile above.")
    if name.strip():
        try:
            table, info = t5_checkpoint(name.strip())
            params.update(t5_values=table.tolist(), num_buckets=info["num_buckets"], max_distance=info["max_distance"])
            st.caption(f"Bucket values of {name.strip()}: {info['num_buckets']} buckets, max distance "
                       f"{info['max_distance']}, {info['heads']} heads (head h of the layer uses column h).")
        except (OSError, ValueError) as err:
            st.error(f"Could not read T5 bucket values from {name.strip()!r}: {err}")

p = compute.params_json(params)
res = panels.run_or_stop(key, doc, head, MECH, params)
causal = res.params["causal"]
a, b, c = st.columns(3)
a.metric("Tokens", f"{doc.n:,}")
b.metric("Run (this head)", f"{res.cost['seconds']:.2f} s")
c.metric("Work vs dense", f"{res.cost['flops'] / res.cost['dense_flops']:.2f}×")

# ---------------------------------------------------------------- bias against distance
st.subheader("Bias against distance, per head")
st.caption("What each head adds to a score, by the key's distance from the query (negative: keys before the "
           "query). The bold line is the head shown elsewhere on this page."
           + ("" if res.structure["bias_exact"] else " This kind depends on the query's content: each point is "
              "the mean over up to 256 evenly spaced queries."))
span = 0 if doc.n < 2 else st.slider("Distances shown (±)", 1, doc.n - 1, min(doc.n - 1, 256),
                                      key=f"relpos_span_{doc.n}")
lo, hi = -span, 0 if causal else span
with st.spinner("Computing the bias for every head…"):
    distances, curves = bias_curves(key, p, lo, hi, doc)
buckets = relpos.t5_bucket(distances, not causal, params["num_buckets"], params["max_distance"]) \
    if values["kind"] == "t5" else None
st.plotly_chart(figures.bias_by_distance(distances, curves, highlight=head if head < curves.shape[0] else None,
                                         buckets=buckets), width="stretch", key="relpos_curve")
if values["kind"] == "rope":
    with st.spinner("Measuring RoPE's decay on this head's queries and keys…"):
        decay = rope_decay(key, head, params["theta"], lo, hi, doc)
    st.caption("RoPE's decay for these very queries and keys: the mean score at each distance with and without the "
               "rotation, beside RoFormer's content-free bound, which shrinks as the distance grows.")
    st.plotly_chart(figures.rope_decay(decay), width="stretch", key="relpos_rope")

# ---------------------------------------------------------------- over the text
st.subheader("The bias over the text")
st.caption("The bias as a map over query and key positions, for the zoomed window only; long windows pool the "
           "map to the screen (each cell is a mean). Red lowers a score, blue raises it.")
window = panels.zoom(doc.n)
grid = int(st.session_state["grid"])
with st.spinner("Computing the bias over the window…"):
    bmap = bias_window(key, head, p, window, grid, doc)
st.plotly_chart(common.pooled_heatmap(bmap.mean[0], doc.tokens, bmap.row_edges, bmap.col_edges,
                                      title=f"Position term, head {head}", diverging=True),
                width="stretch", key="relpos_bias_map")

st.subheader("Attention without and with the bias")
st.caption("Left: the model's own attention (dense). Right: the same queries and keys with the bias added, on one "
           "colour scale.")
panels.map_pair(key, doc, head, MECH, params, window)

st.subheader("Attention against distance")
st.caption("Lines: the head's bias (left axis). Dots: the mean attention weight a query puts on a key at that "
           "distance (right axis, log), measured for the model's own attention and with the bias, on up to 512 "
           "evenly spaced queries. Where the model already favours near tokens, a decaying bias adds little.")
with st.spinner("Measuring attention by distance…"):
    measured = by_distance(key, head, p, doc)
own_row = curves[head] if head < curves.shape[0] else torch.zeros(distances.numel())
st.plotly_chart(figures.bias_and_attention(distances, own_row, measured, causal=causal), width="stretch",
                key="relpos_overlay")

st.subheader("How far from dense")
panels.fidelity_panel(key, doc, head, MECH, params)
