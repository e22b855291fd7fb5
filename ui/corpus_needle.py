"""The Corpus page's section for a sweep's needle table (`python -m explorer.sweep ... --needle`): the
answer's probability against where the fact sits, over documents, per model. Read from the sweep's
folder (the bundled example or a path on this server), once through the cache."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from explorer.analysis import corpus, needle_corpus
from explorer.core.bundled import short_name
from explorer.figures import needle as figs
from ui import charts
from ui import corpus as panel
from ui.cache import computation
from ui.messages import plain


@computation("Reading the needle table")
def read(where: str, stamp: tuple) -> pd.DataFrame | None:
    return needle_corpus.read(where)


def folder() -> Path | None:
    """The folder of the sweep the page shows, when it is one (not uploaded files)."""
    kind = st.session_state.get(panel.SOURCE.key)
    if kind == "example":
        return corpus.EXAMPLE
    typed = str(st.session_state.get(panel.PATH.key, "")).strip()
    return Path(typed) if kind == "path" and typed and Path(typed).is_dir() else None


def curves(models: list[str]) -> None:
    """Per model, the needle table's curve; nothing when the sweep asked no needle."""
    where = folder()
    if where is None:
        return
    table = read(str(where), panel._stamp(needle_corpus.folder(where)))
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
