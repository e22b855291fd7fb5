"""Any set of mechanisms beside dense: one colour scale, one zoom, one query cursor,
a fidelity table and a mechanism x head overview."""
import plotly.express as px
import streamlit as st

from explorer.analysis.compare import COLUMNS, fidelity_table, heads_overview, table_row
from explorer.figures import common
from explorer.mechanisms import REGISTRY
from ui import compute, panels, state

key, doc, head = state.require_doc()
st.title("Compare mechanisms")
st.caption("Pick mechanisms and their parameters: each runs on the same text, layer and head as dense, and every "
           "panel shares one colour scale, one zoom window and one query.")

choices = [k for k in REGISTRY if k != "dense"]
st.session_state.setdefault("cmp_mechs", choices[:3])
st.session_state["cmp_mechs"] = [k for k in st.session_state["cmp_mechs"] if k in choices]
picked = st.multiselect("Mechanisms", choices, key="cmp_mechs", format_func=lambda k: REGISTRY[k].title)
params = {}
for mech_key in picked:
    with st.expander(f"{REGISTRY[mech_key].title} parameters"):
        params[mech_key] = panels.param_form(REGISTRY[mech_key], doc=doc)
results = {k: panels.run_or_stop(key, doc, head, REGISTRY[k], p) for k, p in params.items()}

st.subheader("Attention maps")
grid = int(st.session_state["grid"])
window = panels.zoom(doc.n)
with st.spinner("Pooling attention maps…"):
    maps = {"Dense": panels.window_map(key, doc, head, "", "", window, grid)}
    maps.update({REGISTRY[k].title: panels.window_map(key, doc, head, k, compute.params_json(p), window, grid)
                 for k, p in params.items()})
panels.draw_maps(doc, maps, diverging=True)

st.subheader("One query, every mechanism")
st.caption("The chosen query's attention row over the whole text, for dense and each mechanism: where a curve "
           "drops to zero the mechanism cannot reach those keys.")
query = panels.query_picker(doc)
rows = {"dense": compute.query_row(key, head, "", "", query, doc)}
rows.update({k: compute.query_row(key, head, k, compute.params_json(p), query, doc) for k, p in params.items()})
st.plotly_chart(common.along_text(rows, doc.tokens, y_title="weight", marks=[query], band=False),
                width="stretch", key="query_rows")
st.download_button("Query rows (CSV)", panels.series_csv(rows), f"query-{query}-rows.csv", "text/csv")

if picked:
    st.subheader("Fidelity against dense")
    with st.spinner("Measuring fidelity…"):
        table = fidelity_table([table_row(REGISTRY[k].title, compute.fidelity_of(
            key, head, k, compute.params_json(p), doc), results[k].cost) for k, p in params.items()])
    st.dataframe(table.style.format("{:.4g}"), width="stretch")
    st.caption("Means over queries (a sample of up to 2,048 on long texts). FLOPs and bytes are the mechanism's own "
               "estimate divided by dense attention's at this length; seconds are measured. Click a column to sort.")
    st.download_button("Table (CSV)", table.to_csv(), "fidelity.csv", "text/csv")

    st.subheader("Every head of the layer")
    metric = st.selectbox("Metric", list(COLUMNS), format_func=COLUMNS.get, key="cmp_metric")
    if st.button(f"Compute for all {doc.heads} heads"):
        bar = st.progress(0.0, text="running every mechanism on every head")
        overview = heads_overview(doc, params, metric, progress=lambda d, t: bar.progress(d / t, text=f"{d} of {t}"))
        bar.empty()
        st.session_state["cmp_heads"] = (key, metric, overview.rename(index=lambda k: REGISTRY[k].title))
    held = st.session_state.get("cmp_heads")
    if held and held[0] == key:
        _, shown_metric, overview = held
        st.plotly_chart(px.imshow(overview, color_continuous_scale="Viridis", aspect="auto", text_auto=".2f",
                                  labels={"color": COLUMNS[shown_metric]}), width="stretch", key="heads")
        st.caption("Each cell is the mean over 256 sampled queries of that head: find the head where a mechanism "
                   "fails (high variation, low recall) before reading its maps.")
        st.download_button("Heads overview (CSV)", overview.to_csv(), "heads.csv", "text/csv")
