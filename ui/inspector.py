"""The token inspector: which query every page follows, the text shaded by its weights, its top keys."""
from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from explorer.figures import common
from ui.maps import QUERY


def query_picker(doc) -> int:
    """The query token every inspector follows (setting "query"), with a text search."""
    n = doc.n
    st.session_state[QUERY.key] = min(int(st.session_state.get(QUERY.key, QUERY.default)), n - 1)
    a, b = st.columns([1, 2])
    a.number_input("Query token", 0, n - 1, key=QUERY.key)
    find = b.text_input("Find a word", key="find", placeholder="jump to the first token containing…")
    if find.strip():
        needle = find.strip().lower()
        hits = [i for i, t in enumerate(doc.tokens) if needle in t.lower().lstrip("#Ġ▁")]
        if hits:
            st.caption(f"{len(hits)} match(es); showing the first at token {hits[0]}.")
            return hits[0]
        st.caption("No token matches.")
    return int(st.session_state[QUERY.key])


def topk_table(doc, weights: torch.Tensor, k: int = 10) -> pd.DataFrame:
    """The k keys a query weighs most, with their context in the text."""
    w, idx = torch.topk(weights, min(k, doc.n))
    rows = []
    for weight, i in zip(w.tolist(), idx.tolist()):
        a, b = doc.offsets[i]
        context = doc.text[max(0, a - 30) : b + 30].replace("\n", " ") if b > a else doc.tokens[i]
        rows.append({"position": i, "token": doc.tokens[i], "weight": weight, "context": context})
    return pd.DataFrame(rows)


def text_view(doc, weights: torch.Tensor, query: int, span: int = 300) -> None:
    """The text around the query, every token shaded by the weight the query puts on it."""
    start = max(0, query - span // 2)
    stop = min(doc.n, start + span)
    st.html(common.shaded_text(doc.text, doc.offsets, weights, start, stop, focus=query))
    if doc.n > span:
        st.caption(f"Showing tokens {start}–{stop - 1} of {doc.n:,} around the query; shading is scaled to the "
                   "largest weight in view.")
