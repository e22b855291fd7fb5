"""Any set of mechanisms beside dense: one colour scale, one zoom, one query cursor,
a fidelity table and a mechanism x head overview."""
import plotly.express as px
import streamlit as st

from explorer.analysis.compare import COLUMNS, fidelity_table, heads_overview, table_row
from explorer.figures import common
from explorer.mechanisms import DENSE, REGISTRY
from ui import compute, document, downloads, forms, inspector, maps, settings
from ui.cache import cached, report, store

CHOICES = tuple(k for k in REGISTRY if k != DENSE)
MECHS = settings.Setting("compare_mechs", list(CHOICES[:3]), choices=CHOICES)
METRIC = settings.Setting("compare_metric", "tv", choices=tuple(COLUMNS))
settings.declare(MECHS, METRIC)

run = document.require()
doc = run.doc
st.title("Compare mechanisms")
st.caption("Pick mechanisms and their parameters: each runs on the same text, layer and head as dense, and every "
           "panel shares one colour scale, one zoom window and one query.")

picked = st.multiselect("Mechanisms", CHOICES, key=MECHS.key, format_func=lambda k: REGISTRY[k].title)
params = {}
for mech_key in picked:
    with st.expander(f"{REGISTRY[mech_key].title} parameters"):
        params[mech_key] = forms.checked(REGISTRY[mech_key], forms.param_form(REGISTRY[mech_key], doc=doc))
runs = {k: run.of(k, p) for k, p in params.items()}
results = {k: forms.result(r) for k, r in runs.items()}

st.subheader("Attention maps")
window = maps.zoom(doc.n)
shown = {"Dense": compute.window_map(run, window, maps.grid())}
shown.update({REGISTRY[k].title: compute.window_map(r, window, maps.grid()) for k, r in runs.items()})
maps.draw(doc, shown, diverging=True)

st.subheader("One query, every mechanism")
st.caption("The chosen query's attention row over the whole text, for dense and each mechanism: where a curve "
           "drops to zero the mechanism cannot reach those keys.")
query = inspector.query_picker(doc)
rows = {"dense": compute.query_row(run, query)}
rows.update({k: compute.query_row(r, query) for k, r in runs.items()})
st.plotly_chart(common.along_text(rows, doc.tokens, y_title="weight", marks=[query], band=False),
                width="stretch", key="query_rows")
st.download_button("Query rows (CSV)", downloads.series_csv(rows), f"query-{query}-rows.csv", "text/csv")

if picked:
    st.subheader("Fidelity against dense")
    table = fidelity_table([table_row(REGISTRY[k].title, compute.fidelity_of(r), results[k].cost)
                            for k, r in runs.items()])
    st.dataframe(table.style.format("{:.4g}"), width="stretch")
    st.caption("Means over queries (a sample of up to 2,048 on long texts). FLOPs and bytes are the mechanism's own "
               "estimate divided by dense attention's at this length; seconds are measured. Click a column to sort.")
    st.download_button("Table (CSV)", table.to_csv(), "fidelity.csv", "text/csv")

    st.subheader("Every head of the layer")
    metric = st.selectbox("Metric", METRIC.choices, format_func=COLUMNS.get, key=METRIC.key)
    heads_key = ("heads overview", run.doc_key, tuple((r.mech, r.params_json) for r in runs.values()), metric)
    if st.button(f"Compute for all {doc.heads} heads") or heads_key in store():
        overview = cached(heads_key, lambda: heads_overview(doc, params, metric, progress=report),
                          label="Every mechanism on every head, steps")
        overview = overview.rename(index=lambda k: REGISTRY[k].title)
        st.plotly_chart(px.imshow(overview, color_continuous_scale="Viridis", aspect="auto", text_auto=".2f",
                                  labels={"color": COLUMNS[metric]}), width="stretch", key="heads")
        st.caption("Each cell is the mean over 256 sampled queries of that head: find the head where a mechanism "
                   "fails (high variation, low recall) before reading its maps.")
        st.download_button("Heads overview (CSV)", overview.to_csv(), "heads.csv", "text/csv")
