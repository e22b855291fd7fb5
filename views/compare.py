"""Any set of mechanisms beside dense: shared colour scales, one zoom, one query cursor,
a fidelity table with its measures along the text, and a mechanism x head overview."""
import plotly.express as px
import streamlit as st

from explorer.analysis.compare import COLUMNS, fidelity_table, heads_overview, table_row
from explorer.figures import common
from explorer.mechanisms import DENSE, REGISTRY
from ui import charts, compute, document, downloads, fidelity, forms, inspector, maps, settings
from ui import remedies as remedy_ui
from ui.cache import computation, report

CHOICES = tuple(k for k in REGISTRY if k != DENSE)
MECHS = settings.Setting("compare_mechs", list(CHOICES[:3]), choices=CHOICES)
METRIC = settings.Setting("compare_metric", "tv", choices=tuple(COLUMNS))
PER_ROW = settings.Setting("compare_per_row", 2, lo=1, hi=4)
settings.declare(MECHS, METRIC, PER_ROW)


@computation("Every mechanism on every head, steps")
def every_head(run, params: dict, metric: str):
    """Each mechanism (params: key -> its parameters) against dense on every head of the layer."""
    return heads_overview(compute.remedied_doc(run), params, metric, progress=report)


run = document.require()
doc = run.doc
st.title("Compare mechanisms")
st.caption("Pick mechanisms and their parameters: each runs on the same text, layer and head as dense, and every "
           "panel shares one zoom window and one query, and one colour scale unless a map would look flat on it.")

picked = st.multiselect("Mechanisms", CHOICES, key=MECHS.key, format_func=lambda k: REGISTRY[k].title)
spec = remedy_ui.picker()
run = run.remedied(spec)
params = forms.forms_of(picked, doc=doc)
runs = {k: run.of(k, p) for k, p in params.items()}
results = {k: forms.result(r) for k, r in runs.items()}

charts.section("Attention maps", "Dense and every chosen mechanism over the same window; maps that share a colour "
               "scale share a colour bar; a signed map, or one that would look flat on the shared range, has its own. "
               "Drag a box on any map to zoom every map into it.")
window = maps.zoom(doc.n)
shown = {DENSE: compute.window_map(run, window, maps.grid())}
shown.update({k: compute.window_map(r, window, maps.grid()) for k, r in runs.items()})
per_row = st.select_slider("Maps per row", [1, 2, 3, 4], key=PER_ROW.key)
maps.draw_grid(doc, shown, diverging=True, per_row=per_row, key="compare_maps")

charts.section("One query, every mechanism",
               "The chosen query's attention row over the whole text, for dense and each mechanism: where a curve "
               "drops to zero the mechanism cannot reach those keys.")
query = inspector.query_picker(doc)
rows = {"dense": compute.query_row(run, query)}
rows.update({k: compute.query_row(r, query) for k, r in runs.items()})
charts.show(st, common.along_text(rows, doc.pieces, y_title="weight", marks=[query], band=False),
                width="stretch", key="query_rows")
st.download_button("Query rows (CSV)", downloads.series_csv(rows), f"query-{query}-rows.csv", "text/csv")

if picked:
    charts.section("Fidelity against dense")
    table = fidelity_table([table_row(REGISTRY[k].title, compute.fidelity_of(r), results[k].cost)
                            for k, r in runs.items()])
    st.dataframe(table.style.format("{:.4g}"))
    st.caption("Means over queries (a sample of up to 2,048 on long texts). FLOPs and bytes are the mechanism's own "
               "estimate divided by dense attention's at this length; seconds are measured. Click a column to sort.")
    st.download_button("Table (CSV)", table.to_csv(), "fidelity.csv", "text/csv")
    fidelity.along({k: compute.fidelity_of(r) for k, r in runs.items()}, doc, key="compare_fidelity_along")

    charts.section("Every head of the layer")
    metric = st.selectbox("Metric", METRIC.choices, format_func=COLUMNS.get, key=METRIC.key)
    layer = run.whole_layer()
    if st.button(f"Compute for all {doc.heads} heads") or every_head.made(layer, params, metric):
        overview = every_head(layer, params, metric).rename(index=lambda k: REGISTRY[k].title)
        charts.show(st, px.imshow(overview, color_continuous_scale="Viridis", aspect="auto", text_auto=".2f",
                                  labels={"color": COLUMNS[metric]}), key="heads")
        st.caption("Each cell is the mean over 256 sampled queries of that head: find the head where a mechanism "
                   "fails (high variation, low recall) before reading its maps.")
        st.download_button("Heads overview (CSV)", overview.to_csv(), "heads.csv", "text/csv")
