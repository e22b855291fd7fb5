"""Segmented attention: segment boundaries over the text and on the attention map, how much
of dense attention crosses them, and what the inter-segment summaries win back."""
import pandas as pd
import streamlit as st

from explorer.analysis.segmented import outside_mass
from explorer.figures import common
from explorer.figures import segments as figures
from explorer.mechanisms import REGISTRY
from ui import charts, compute, fidelity, forms, inspector, maps
from ui.cache import computation

MECH = REGISTRY["segmented"]


@computation()
def crossing(run):
    """Each query's dense mass outside what segmented attention lets it see directly (the run is segmented's)."""
    q, k, _ = compute.qkv(run)
    p = run.params
    lse = compute.dense(run, maps.grid()).lse
    return outside_mass(q, k, lse, p["segment_length"], p["overlap"], p["causal"], p.get("boundaries"))[0].cpu()


@computation()
def segment_table(run):
    """Each segment's token and character spans, with its queries' mass beyond it."""
    doc, s = run.doc, compute.result(run).structure
    return figures.segment_table(doc.text, doc.offsets, s.starts, s.ends, crossing(run))

run, res = forms.header(MECH, structure=("Segment by", "segments", "segment_length"))
doc, params = run.doc, run.params
starts, sizes = res.structure.starts, res.structure.sizes
forms.metrics(res, {"Tokens": (f"{doc.n:,}", None), "Segments": (f"{starts.numel():,}", None),
                    "Median segment": (f"{int(sizes.median())} tokens", None)})

charts.show(st, figures.span_strips({"segments": starts}, doc.n, doc.pieces,
                                    title="Segments over the text (grey: a pooled stretch holding several)"),
                width="stretch", key="segmented_strip")

# ---------------------------------------------------------------- maps
drawn = []
maps.pair_section("Attention maps with the segment boundaries",
                  "Dense attention (left) and segmented attention (right) over the same window, on shared scales; "
                  "white lines are segment boundaries (drawn when at most 120 fall in the window - zoom in to see "
                  "them). Without summaries the right map is zero outside the diagonal blocks.", run, MECH.title,
                  decorate=lambda fig, _, m: drawn.append(figures.add_boundaries(fig, starts, m.row_edges, m.col_edges)))
if None in drawn:
    st.caption("Too many boundaries in this window to draw; zoom in.")

# ---------------------------------------------------------------- crossing
charts.section("How much of dense attention crosses the boundaries",
               "For every query, the share of its dense attention that lands outside what segmented attention lets it "
               "see directly (its segment plus the look-back): exactly what is lost without the summaries. Left: along "
               "the text; right: averaged over each segment's queries.")
lost = crossing(run)
st.metric("Dense mass outside the own segment (mean over queries)", f"{float(lost.mean()):.1%}")
left, right = st.columns(2)
marks = starts[1:].tolist() if starts.numel() <= 60 else None
charts.show(left, common.along_text({"dense mass beyond the segment": lost}, doc.pieces, y_title="share",
                                    marks=marks), key="segmented_cross_along")
charts.show(right, figures.per_segment(lost, starts, doc.n, doc.pieces, y_title="share",
                                       title="Per segment"), key="segmented_cross_bars")

with st.expander(f"The {starts.numel():,} segments: token and character spans"):
    st.dataframe(segment_table(run), hide_index=True)

# ---------------------------------------------------------------- with and without summaries
charts.section("With and without the inter-segment step",
               "The same segments run twice, without and with the per-segment summaries. The table compares both with "
               "dense (means over queries); the chart sets the mass the summaries take beside the dense mass that "
               "crosses the boundaries, which is what they stand in for.")
variants = {name: run.of(MECH.key, {**params, "summaries": flag})
            for name, flag in (("without summaries", False), ("with summaries", True))}
results = {name: forms.result(v) for name, v in variants.items()}
fids = {name: compute.fidelity_of(v) for name, v in variants.items()}
st.dataframe(pd.DataFrame({name: fidelity.summary_table(f)["mean"] for name, f in fids.items()})
             .style.format("{:.4f}"))
left, right = st.columns(2)
charts.show(left, common.along_text({"dense mass beyond the segment": lost,
                                     "mass on summaries": results["with summaries"].structure.summary_mass[0]},
                                    doc.pieces, y_title="share", title="What the summaries stand in for"),
                  width="stretch", key="segmented_summary_mass")
charts.show(right, common.along_text({name: f.tv[0] for name, f in fids.items()}, doc.pieces,
                                     positions=fids["with summaries"].rows.tolist(), y_title="total variation",
                                     title="Distance from dense along the text"),
                   width="stretch", key="segmented_tv_both")

# ---------------------------------------------------------------- inspector
charts.section("Token inspector",
               "The text around a query with its segments tinted in turn (red bars at boundaries), then shaded "
               "by the weight segmented attention gives each token; the chart sets its row beside dense's over "
               "the whole text.")
query = inspector.query_picker(doc)
lo, hi = max(0, query - 150), min(doc.n, query + 150)
left, right = st.columns(2)
with left:
    st.markdown("**Segments around the query**")
    st.html(figures.segmented_text(doc.text, doc.offsets, starts, lo, hi, focus=query))
row = compute.query_row(run, query)
with right:
    st.markdown("**Weights of segmented attention**")
    inspector.text_view(doc, row, query, who=MECH.title)
charts.show(st, common.along_text({"dense": compute.query_row(run.reference(), query), MECH.title: row}, doc.pieces,
                                  y_title="weight", title=f"Attention of token {query} over the text"),
                width="stretch", key="segmented_row")

charts.section("How far from dense")
fidelity.panel(run)
