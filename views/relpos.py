"""Relative position: T5, MPNet's learned, ALiBi, Shaw and RoPE biases on the model's own queries
and keys, the bias by distance and over the text, and what it does to attention."""
import streamlit as st
import torch

from explorer.analysis import relpos as views
from explorer.figures import relpos as figures
from explorer.mechanisms import REGISTRY, relpos
from ui import charts, compute, fidelity, forms, maps, messages, settings
from ui.cache import computation

MECH = REGISTRY["relpos"]
EXPLAIN = {
    "t5": "T5 adds a learned number per head to each score, looked up by the distance's bucket: one bucket per "
          "distance near the query, log-spaced buckets farther out, one shared bucket beyond the max distance.",
    "mpnet": "MPNet adds a number per head looked up by the distance's bucket, as T5 does, but these numbers are "
             "the ones all-mpnet-base-v2 learned (32 buckets both ways, up to 128 tokens apart; head h here gets "
             "MPNet's head h, counted modulo its 12): a bias a model chose, not one drawn at random.",
    "alibi": "ALiBi subtracts slope × |distance| from each score; every head has its own slope (1/2, 1/4, … for "
             "8 heads), so some heads stay local and others read far.",
    "shaw": "Shaw et al. add q · a(distance) to each score, with one embedding a per distance clipped to ±clip: the "
            "bias depends on the query's content, so its curve here is an average over queries.",
    "rope": "RoPE turns each pair of query and key dimensions by an angle proportional to the position, so the score "
            "depends on the distance through the angle between them; its curve here is the average change of score.",
}
T5_CHECKPOINT = settings.Setting("relpos_t5", "", max_chars=300)
T5_FIELD = "T5 checkpoint for the bucket values (optional)"
SPAN = settings.Setting("relpos_span", 256, lo=1, hi=2**31 - 1)
settings.declare(T5_CHECKPOINT, SPAN)


@computation()
def checkpoint_values(name: str):
    return relpos.t5_checkpoint_values(name)


@computation("Computing the bias of every head")
def head_curves(run, heads: int, lo: int, hi: int):
    """Every head's bias by distance; a run stands for its layer here (its head is only highlighted)."""
    params = run.params
    return views.bias_curve(run.doc.q[:heads], run.doc.k[:heads], relpos.curve_distances(lo, hi), **params)


@computation()
def rope_decay(run, lo: int, hi: int):
    q, k, _ = compute.qkv(run)
    return views.rope_decay(q, k, run.params["theta"], relpos.curve_distances(lo, hi))


@computation("Computing the bias over the window")
def bias_map(run, window: tuple, grid: int):
    q, k, _ = compute.qkv(run)
    return views.bias_map(q, k, rows=window[:2], cols=window[2:], grid=grid, per_bin=compute.MAP_ROWS_PER_BIN,
                          **MECH.for_head(run.params, run.head, run.doc.heads))


@computation("Measuring attention by distance")
def by_distance(run):
    """Mean weight by distance: the model's own attention, and with the bias."""
    q = run.doc.q
    return {"dense": views.attention_by_distance(compute.weights_fn(run.reference()), run.doc.n, 1,
                                                 causal=run.doc.causal, device=q.device),
            "relpos": views.attention_by_distance(compute.result(run).weights, run.doc.n, 1,
                                                  causal=run.params["causal"], device=q.device)}


kind = st.session_state.get(settings.param_key(MECH, "kind"), MECH.defaults()["kind"])
shown = {"kind", "causal", *relpos.SCHEMES[kind].reads}  # the form draws only parameters
run = forms.opening(MECH, names=tuple(shown))
doc = run.doc
params = {**MECH.defaults(), **run.params}  # every head's curve needs the full set; a run adds its head
params.pop("t5_values")
st.caption(EXPLAIN[params["kind"]])
if params["kind"] == "t5":
    name = st.text_input(T5_FIELD, key=T5_CHECKPOINT.key,
                         max_chars=T5_CHECKPOINT.max_chars,
                         placeholder="a local folder or a cached Hugging Face id, e.g. t5-small",
                         help="Reads the encoder's relative_attention_bias; empty uses the bucket values "
                              "above.").strip()
    if name:
        try:
            table, info = checkpoint_values(name)
            params.update(t5_values=table.tolist(), num_buckets=info["num_buckets"], max_distance=info["max_distance"])
            st.caption(f"Bucket values of {name}: {info['num_buckets']} buckets, max distance "
                       f"{info['max_distance']}, {info['heads']} heads (head h of the layer uses column h).")
        except ValueError as err:
            messages.error(err, then=f"Change “{T5_FIELD}”, or empty it to use the bucket values above.")
if params["kind"] == "mpnet":
    learned = relpos.learned_table()
    st.caption(f"Bucket values of {learned.model}, licence {learned.licence}: extracted once from the model by "
               "scripts/extract_mpnet_bias.py into assets/position_bias/mpnet.json.")
run = run.of(MECH.key, params)
res = forms.result(run)
causal = res.params["causal"]
forms.metrics(res, {"Tokens": (f"{doc.n:,}", None)})

# ---------------------------------------------------------------- bias against distance
charts.section("Bias against distance, per head",
               "What each head adds to a score, by the key's distance from the query (negative: keys before the "
               "query). The bold line is the head shown elsewhere on this page."
               + ("" if res.structure.bias_exact else " This kind depends on the query's content: each point is "
               "the mean over up to 256 evenly spaced queries."))
if doc.n < 2:
    span = 0
else:
    st.session_state[SPAN.key] = min(int(st.session_state[SPAN.key]), doc.n - 1)
    span = st.slider("Distances shown (±)", 1, doc.n - 1, key=SPAN.key)
lo, hi = -span, 0 if causal else span
heads = doc.heads if params.get("t5_values") is None else min(doc.heads, len(params["t5_values"][0]))
distances, curves = head_curves(run.of(MECH.key, params).whole_layer(), heads, lo, hi)
buckets = relpos.SCHEMES[params["kind"]].buckets(params, distances)
charts.show(st, figures.bias_by_distance(distances, curves, highlight=run.head if run.head < curves.shape[0] else None,
                                         buckets=buckets), key="relpos_curve")
if params["kind"] == "rope":
    decay = rope_decay(run, lo, hi)
    st.caption("RoPE's decay for these very queries and keys: the mean score at each distance with and without the "
               "rotation, beside RoFormer's content-free bound, which shrinks as the distance grows.")
    charts.show(st, figures.rope_decay(decay), key="relpos_rope")

# ---------------------------------------------------------------- over the text
charts.section("The bias over the text",
               "The bias as a map over query and key positions, for the zoomed window only; long windows pool the "
               "map to the screen (each cell is a mean). Red lowers a score, blue raises it.")
window = maps.zoom(doc.n)
bmap = bias_map(run, window, maps.grid())
charts.show(st, figures.bias_map(bmap, doc.pieces, title=f"Position term, head {run.head}"), key="relpos_bias_map")

charts.section("Attention without and with the bias",
               "Left: the model's own attention (dense). Right: the same queries and keys with the bias added, on one "
               "colour scale.")
maps.pair(run, MECH.title, window)

charts.section("Attention against distance",
               "Lines: the head's bias (left axis). Dots: the mean attention weight a query puts on a key at that "
               "distance (right axis, log), measured for the model's own attention and with the bias, on up to 512 "
               "evenly spaced queries. Where the model already favours near tokens, a decaying bias adds little.")
measured = by_distance(run)
own_row = curves[run.head] if run.head < curves.shape[0] else torch.zeros(distances.numel())
charts.show(st, figures.bias_and_attention(distances, own_row, measured, causal=causal),
                key="relpos_overlay")

charts.section("How far from dense")
fidelity.panel(run)
