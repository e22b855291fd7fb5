"""A corpus sweep (`python -m explorer.sweep`) read back: fidelity per mechanism over documents and
heads, the share of documents where each head is a sink, entropy against length, every row in a
sortable table (a click opens that document, layer and head on the Dense attention page), and the
documents that failed."""
import streamlit as st

from explorer.analysis import corpus
from explorer.analysis.sinks import THRESHOLD
from explorer.core.bundled import short_name
from explorer.figures import corpus as figs
from ui import charts, messages, settings
from ui import corpus as panel
from ui.messages import plain

settings.declare(*panel.SETTINGS)

st.title("Corpus")
st.caption("What a sweep measured over many documents: every layer and head of each model, dense attention and "
           "each mechanism beside it. Write one with `python -m explorer.sweep` (see the README, \"Sweeping a "
           "corpus\"); the bundled example sweeps the sample texts.")
try:
    sweep = panel.choose()
except ValueError as err:
    messages.error(err, "Choose a sweep written by python -m explorer.sweep.")
    st.stop()
if sweep is None:
    st.stop()
fine, failed = corpus.split(sweep)
models = sorted(fine.model.unique())
st.caption(f"{fine.document.nunique():,} documents, {len(models)} model{'s' * (len(models) > 1)}, "
           f"{fine.mechanism.nunique()} mechanisms (dense included), {len(fine):,} rows"
           + (f"; {len(failed):,} failed (listed at the end)" if len(failed) else "") + ".")
model = panel.pick(models, panel.MODEL, "Model", "every model", where=st.columns(3)[0], shown=short_name)
shown = fine if not model else fine[fine.model == model]
colours = figs.model_colours(models)

charts.section("Sinks across documents",
               f"The share of documents in which a head gives the first token more than {THRESHOLD:g} of each query's "
               "attention (Gu et al.'s first-token score, over the queries the sweep measured), from 0 to 100 %. "
               "Hover a cell for its counts.")
columns = st.columns(len(shown.model.unique()))
for where, name in zip(columns, sorted(shown.model.unique())):
    grid = corpus.sink_grid(shown, name)
    if grid.sinks.any():
        charts.show(where, figs.sink_share_map(grid), key=f"corpus_sinks_{name}")
    else:  # a map of zeros says nothing its title would not
        where.info(f"**{plain(short_name(name))}: no head is a sink in any document.** The first token's score "
                   f"stays at most {grid.top:.2f} in every layer, head and document, under the threshold "
                   f"{THRESHOLD:g}.")

charts.section("Fidelity per mechanism",
               "Each mechanism against dense attention on the same heads: over every document and head, the box "
               "spans the middle half, the line is the median, the whiskers reach the 10th and 90th percentiles. "
               "Lower errors and higher recall are closer to dense.")
summary = corpus.fidelity_summary(shown)
if summary.empty:
    st.info("This sweep measured dense attention only: no mechanism to compare.")
else:
    charts.show(st, figs.fidelity_boxes(summary, colours), key="corpus_fidelity")

charts.section("Entropy against length",
               "Each point is one document and model: the mean normalised entropy of its heads (0 when a query "
               "attends to one key, 1 when uniformly), with a bar from the 10th to the 90th percentile of its heads.")
lengths = corpus.entropy_by_length(shown)
if lengths.tokens.nunique() > 1:
    charts.show(st, figs.entropy_against_length(lengths, colours), key="corpus_entropy")
else:  # one length: a column of points, no trend to read
    means = ", ".join(f"{plain(short_name(m))} {e:.2f}" for m, e in lengths.groupby("model").entropy.mean().items())
    st.info(f"Every document was measured on {lengths.tokens.iloc[0]:,} tokens (the sweep's `--max-tokens` cuts "
            f"longer texts), so there is no length to draw entropy against; sweep texts of different lengths to see "
            f"it. Mean normalised entropy over the documents: {means}.")

charts.section("Every row", "Click a column to sort; click a row to open that document, model, layer and head on the "
               "Dense attention page.")
a, b, _ = st.columns(3)
named = corpus.named(shown)
mechanism = panel.pick(sorted(named.shown.unique()), panel.MECHANISM, "Mechanism", "every mechanism", where=a)
layer = panel.pick(sorted(shown.layer.unique().tolist()), panel.LAYER, "Layer", "every layer", where=b)
rows = panel.table(named, mechanism, layer)
# keyed by the filters: other rows start with no row clicked (a click kept would open another row)
event = st.dataframe(rows, key=f"corpus_rows_{model}_{mechanism}_{layer}", on_select="rerun",
                     selection_mode="single-row", hide_index=True,
                     column_order=panel.TABLE, column_config=panel.column_config())
st.download_button("These rows (CSV)", lambda: rows.to_csv(index=False), "corpus-rows.csv", "text/csv",
                   on_click="ignore")
if event.selection.rows:
    panel.open_row(rows.iloc[event.selection.rows[0]])

if len(failed):
    charts.section("Documents that failed", "Each was skipped by the sweep with this error; the others went on.")
    for row in failed.itertuples():
        st.markdown(f"- **{plain(row.document)}** ({plain(row.model)}): {plain(row.error)}")
