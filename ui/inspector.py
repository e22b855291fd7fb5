"""The token inspector: which query every page follows, the text shaded by its weights, its top keys.

A query is picked by its number, by a word (stepping through every match), by clicking a point
of an along-the-text chart (`pick_from`) or a row of the top-keys table; it starts on the first
token that carries content.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from explorer.figures import common
from ui import settings
from ui.maps import QUERY
from ui.messages import plain

FIND = settings.Setting("find", "", url=False, max_chars=100)
FIND_AT = settings.Setting("find_at", 0, url=False, lo=0, hi=2**31 - 1)
settings.register(FIND, FIND_AT)


def _set_query(position: int) -> None:
    st.session_state[QUERY.key] = int(position)


def query_picker(doc) -> int:
    """The query token every inspector follows (setting "query"): a number, or a word's matches."""
    n = doc.n
    current = int(st.session_state.get(QUERY.key, QUERY.default))
    st.session_state[QUERY.key] = doc.first_content() if current < 0 else min(current, n - 1)
    a, b, c = st.columns([1, 2, 1])
    a.number_input("Query token", 0, n - 1, key=QUERY.key)
    find = b.text_input("Find a word", key=FIND.key, max_chars=FIND.max_chars,
                        placeholder="step through the tokens containing…")
    hits = doc.matches(find)
    if find.strip() and not hits:
        b.caption(f"No token contains “{plain(find.strip())}”.")
    if hits:
        at = min(int(st.session_state.get(FIND_AT.key, 0)), len(hits) - 1)
        back, ahead = c.columns(2)
        if back.button("◀", key="find_back", disabled=at == 0, help="previous match"):
            at -= 1
        if ahead.button("▶", key="find_next", disabled=at == len(hits) - 1, help="next match"):
            at += 1
        st.session_state[FIND_AT.key] = at
        b.caption(f"Match {at + 1} of {len(hits)}: token {hits[at]}.")
        return hits[at]
    return int(st.session_state[QUERY.key])


def pick_from(event, positions: list[int] | None = None) -> None:
    """A point clicked on an along-the-text chart becomes the query (x is a token position,
    or, for a sampled series, an index into `positions`); the page runs again to follow it."""
    points = (event or {}).get("selection", {}).get("points") or []
    if not points:
        return
    x = int(round(points[0].get("x", -1)))
    if x >= 0 and x != st.session_state.get(QUERY.key):
        _set_query(x)
        st.rerun()


def topk_table(doc, weights: torch.Tensor, k: int = 10) -> pd.DataFrame:
    """The k keys a query weighs most, with their context in the text."""
    w, idx = torch.topk(weights, min(k, doc.n))
    rows = []
    for weight, i in zip(w.tolist(), idx.tolist()):
        a, b = doc.offsets[i]
        context = doc.text[max(0, a - 30) : b + 30].replace("\n", " ") if b > a else doc.tokens[i]
        rows.append({"position": i, "token": doc.tokens[i], "weight": weight, "context": context})
    return pd.DataFrame(rows)


def topk_picker(doc, weights: torch.Tensor, key: str = "topk") -> None:
    """The top-keys table; clicking a row makes that key the query."""
    table = topk_table(doc, weights)
    event = st.dataframe(table, width="stretch", hide_index=True, on_select="rerun", selection_mode="single-row",
                         key=key, column_config={"weight": st.column_config.NumberColumn(format="%.4f")})
    chosen = (event or {}).get("selection", {}).get("rows") or []
    if chosen:
        position = int(table.iloc[chosen[0]]["position"])
        if position != st.session_state.get(QUERY.key):
            st.session_state[FIND.key] = ""
            _set_query(position)
            st.rerun()
    st.caption("Click a row to inspect that key as the query.")


def text_view(doc, weights: torch.Tensor, query: int, span: int = 300, who: str = "") -> None:
    """The text around the query, every token shaded by the weight the query puts on it.

    who: the mechanism the weights are of, named when the query gets no attention from it."""
    if not bool(torch.as_tensor(weights).abs().sum() > 0):
        st.warning(f"Token {query} attends to nothing{' under ' + who if who else ''}: every weight of its row is "
                   "zero, so its output is zero too.")
    start = max(0, query - span // 2)
    stop = min(doc.n, start + span)
    st.html(common.shaded_text(doc.text, doc.offsets, weights, start, stop, focus=query))
    if doc.n > span:
        st.caption(f"Showing tokens {start}–{stop - 1} of {doc.n:,} around the query; shading is scaled to the "
                   "largest weight in view.")
