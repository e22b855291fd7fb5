"""The Corpus page's section for a sweep's needle table (`python -m explorer.sweep ... --needle`): the
answer's probability against where the fact sits, over documents, per model. Read from the sweep's
folder (the bundled example or a path on this server) or its uploaded files, once through the cache."""
from __future__ import annotations

import streamlit as st

from explorer.analysis import needle_corpus
from explorer.core.bundled import short_name
from explorer.figures import needle as figs
from ui import charts
from ui import corpus as panel
from ui.messages import plain


def curves(models: list[str]) -> None:
    """Per model, the needle table's curve; nothing when the sweep asked no needle."""
    table = panel.read_needle(*panel.chosen())
    if table is None:
        return
    summary = needle_corpus.curves(table[table.model.isin(models)])
    if summary.empty:
        return
    charts.section("The needle across documents",
                   "The sweep planted a fact in every document and asked it back (--needle): the probability of the "
                   "whole answer against where the fact sat, the median over documents as a line and the lowest to "
                   "the highest shaded, with the model's own attention and each mechanism swapped into every layer.")
    shown = sorted(summary.model.unique())
    for col, model in zip(st.columns(len(shown)), shown):
        col.markdown(f"**{plain(short_name(model))}**")
        charts.show(col, figs.corpus_chart(summary, model), key=f"corpus_needle_{model}")
    failed = table[table.error.fillna("") != ""]
    if len(failed):
        st.caption(f"{len(failed)} (document, model) pairs could not be asked: "
                   + "; ".join(f"{plain(d)} under {plain(short_name(m))}: {plain(e)}"
                               for d, m, e in zip(failed.document, failed.model, failed.error)))
