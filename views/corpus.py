"""A corpus sweep (`python -m explorer.sweep`) read back: the share of documents where each head is a
sink, fidelity per mechanism over documents and heads, the perplexity with each mechanism inside the model
(a sweep run with --in-model), entropy against length, every row in a
sortable table (a click opens that document, layer and head on the Dense attention page), and the
documents that failed."""
import streamlit as st

from explorer.analysis import corpus
from explorer.figures import corpus as figs
from ui import corpus as panel
from ui import corpus_needle
from ui import settings

settings.declare(*panel.SETTINGS)

st.title("Corpus")
st.caption("What a sweep measured over many documents: every layer and head of each model, dense attention and "
           "each mechanism beside it. Write one with `python -m explorer.sweep` (see the README, \"Sweeping a "
           "corpus\"); the bundled example sweeps the sample texts.")
sweep = panel.choose()
if sweep is None:
    st.stop()
fine, failed = corpus.split(sweep)
colours = figs.model_colours(sorted(fine.model.unique()))  # the same colour for a model whatever the filter
shown = panel.summary(fine, failed)
panel.sinks(shown)
panel.fidelity(shown, colours)
panel.in_model(sorted(shown.model.unique()), colours)
panel.entropy(shown, colours)
corpus_needle.curves(sorted(shown.model.unique()))
panel.every_row(shown)
panel.failures(failed)
