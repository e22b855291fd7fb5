"""The token inspector: the one token every page follows, what it attends to and who attends to it.

One query, one truth: the setting "query" (ui.maps.QUERY) is the followed token, and every way of
picking one sets it through `pick`: the number field, a search match, a point of a curve, a row of
a table, a box dragged on a map (its first row, ui.maps), a token clicked in the text. Widget
events are applied in their callbacks, before the page runs again, so the field, the shaded text
and the tables always name the same token. Settings:
  query      the followed token (-1: the document's default, Doc.default_query)
  selection  several tokens read together, as "a-b,c" (inclusive ranges; "" for none): a span
             selected in the text, a shift-click, or every match of a search
  follow     "row": what the token (or the selection) attends to; "column": who attends to it
  find       what the search box holds (not in the URL)
"""
from __future__ import annotations

import re

import pandas as pd
import streamlit as st
import torch

from explorer.core.search import MAX_MATCHES
from explorer.figures import common
from ui import charts, compute, settings
from ui.maps import QUERY, ZOOM_K, ZOOM_Q
from ui.messages import plain
from ui.state import Run

MAX_SELECTED = 10_000  # tokens a selection may hold (each costs one row of attention)
SPAN = 300  # tokens of text shown around the followed one
_RANGES = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


def parse_ranges(value: str) -> list[tuple[int, int]]:
    """"12-15,40" as [(12, 16), (40, 41)] (half-open); ValueError for anything else."""
    value = value.replace(" ", "")
    if not value:
        return []
    if not _RANGES.fullmatch(value):
        raise ValueError("must list tokens as numbers and ranges, e.g. 12-15,40")
    out = []
    for part in value.split(","):
        a, _, b = part.partition("-")
        lo, hi = int(a), int(b or a)
        if hi < lo:
            raise ValueError(f"the range {part} runs backwards")
        out.append((lo, hi + 1))
    if sum(b - a for a, b in out) > MAX_SELECTED:
        raise ValueError(f"a selection holds at most {MAX_SELECTED:,} tokens")
    return out


def format_ranges(ranges: list[tuple[int, int]]) -> str:
    """[(12, 16), (40, 41)] as "12-15,40"; adjacent and overlapping ranges merged."""
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return ",".join(f"{a}" if b == a + 1 else f"{a}-{b - 1}" for a, b in merged)


SELECTION = settings.Setting("selection", "", max_chars=4000, rule=parse_ranges)
FOLLOW = settings.Setting("follow", "row", choices=("row", "column"))
FIND = settings.Setting("find", "", url=False, max_chars=200)
settings.register(SELECTION, FOLLOW, FIND)
FOLLOWING = {"row": "what it attends to", "column": "who attends to it"}
ON_TEXT = (ZOOM_Q, ZOOM_K, QUERY, SELECTION)  # the view settings relative to one text: another text starts them over
SEARCHED = "_searched"  # session key: the search whose first match was followed (a new one is followed anew)


def pick(position: int, selection: list[tuple[int, int]] | None = None) -> None:
    """Follow a token, alone or at the start of a selection. Only in a widget callback or before the
    inspector's widgets exist (Streamlit refuses a widget's value set after it was drawn)."""
    st.session_state[QUERY.key] = int(position)
    st.session_state[SELECTION.key] = format_ranges(selection) if selection else ""


def query(doc) -> int:
    """The followed token, brought into this text (-1, or a value from a longer text, resolved).
    Called before the field is drawn (query_picker does), as a drawn widget's value is fixed."""
    current = int(st.session_state.get(QUERY.key, QUERY.default))
    chosen = doc.default_query() if current < 0 else min(current, doc.n - 1)
    if chosen != current:
        st.session_state[QUERY.key] = chosen
    return chosen


def selected(doc) -> torch.Tensor | None:
    """The selected tokens that lie in this text, as a LongTensor (None when fewer than two)."""
    try:
        ranges = parse_ranges(str(st.session_state.get(SELECTION.key, "")))
    except ValueError:
        return None
    rows = sorted({i for a, b in ranges for i in range(a, min(b, doc.n))})
    return torch.tensor(rows) if len(rows) > 1 else None


def describe_selection(rows: torch.Tensor) -> str:
    """A selection in words: "tokens 12–15", or "58 stretches from token 164 to 22,368"."""
    ranges = parse_ranges(format_ranges([(i, i + 1) for i in rows.tolist()]))
    first, last = ranges[0][0], ranges[-1][1] - 1
    if len(ranges) == 1:
        return f"tokens {first:,}–{last:,}"
    return f"{len(ranges):,} stretches from token {first:,} to {last:,}"


def query_picker(doc, selectable: bool = False) -> int:
    """The followed token's field and the text search (with selectable, an All button that selects every
    match: only the Dense page reads a selection); returns the followed token."""
    _search_now(doc)
    current = query(doc)
    a, b, c = st.columns([1, 2, 1], vertical_alignment="top")
    a.number_input("Token", 0, doc.n - 1, key=QUERY.key, on_change=_typed,
                   help="the token every chart below follows; click a token in the text, a point of a curve or a "
                        "row of a table to follow another")
    b.text_input("Find in the text", key=FIND.key, max_chars=FIND.max_chars,
                 placeholder="a word or a phrase; line:120; char:5000")
    hits = doc.find(st.session_state.get(FIND.key, ""))
    _search_caption(b, hits, current)
    if hits:
        c.markdown("&nbsp;")  # the buttons level with the fields, not with their labels
        row = c.container(horizontal=True, gap="small")
        row.button("◀", key="find_back", on_click=_step, args=(doc, -1), help="the match before this token",
                    disabled=hits[0][0] >= current)
        row.button("▶", key="find_next", on_click=_step, args=(doc, 1), help="the match after this token",
                     disabled=hits[-1][0] <= current)
        if selectable:
            row.button("All", key="find_all", on_click=_select_every, args=(doc,),
                       help="select every match: read their attention together", disabled=len(hits) < 2)
    return current


def _typed() -> None:
    st.session_state[SELECTION.key] = ""


def _search_now(doc) -> None:
    """A new search follows its first match: seen by comparing with the last search followed, before the
    field is drawn (an on_change callback can be lost to a refreshing fragment's run on a long text)."""
    typed = st.session_state.get(FIND.key, "")
    if typed == st.session_state.get(SEARCHED):
        return
    st.session_state[SEARCHED] = typed
    hits = doc.find(typed)
    if hits:
        pick(hits[0][0])


def _step(doc, direction: int) -> None:
    """The next (or previous) match from the followed token: matches step from where one stands."""
    hits = doc.find(st.session_state.get(FIND.key, ""))
    current = int(st.session_state.get(QUERY.key, 0))
    ahead = [h for h in hits if (h[0] > current if direction > 0 else h[0] < current)]
    if ahead:
        pick(ahead[0][0] if direction > 0 else ahead[-1][0])


def _select_every(doc) -> None:
    hits = doc.find(st.session_state.get(FIND.key, ""))
    if len(hits) > 1:
        total = sum(b - a for a, b in hits)
        kept, count = [], 0
        for a, b in hits:  # as many whole matches as a selection holds
            if count + b - a > MAX_SELECTED:
                break
            kept.append((a, b))
            count += b - a
        pick(kept[0][0], kept)
        if count < total:
            settings.refuse(SELECTION.key, f"the first {len(kept):,} of {len(hits):,} matches were selected (a "
                                           f"selection holds at most {MAX_SELECTED:,} tokens)")


def _search_caption(where, hits: list[tuple[int, int]], current: int) -> None:
    typed = st.session_state.get(FIND.key, "").strip()
    if not typed:
        return
    if not hits:
        where.caption(f"“{plain(typed)}” is not in the text" + (" (lines and characters count from 1 and 0)."
                                                                 if ":" in typed else "."))
        return
    at = next((i for i, (a, b) in enumerate(hits) if a <= current < b), None)
    more = f" (the first {MAX_MATCHES:,})" if len(hits) >= MAX_MATCHES else ""
    if at is None:
        where.caption(f"{len(hits):,} matches{more}; ◀ ▶ step from token {current:,}.")
        return
    a, b = hits[at]
    where.caption(f"Match {at + 1:,} of {len(hits):,}{more}: " + (f"token {a:,}." if b == a + 1 else
                                                                   f"tokens {a:,}–{b - 1:,}."))


def _point(points: list, positions: list[int] | None) -> int | None:
    """The token a clicked point stands for: x is a position, or an index into a sampled series' positions."""
    x = int(round(points[0].get("x", -1))) if points else -1
    if x < 0:
        return None
    return positions[x] if positions is not None and x < len(positions) else x


def on_point(key: str, positions: list[int] | None = None):
    """The callback of an along-the-text chart drawn with `key`: a clicked point becomes the followed token."""
    def picked() -> None:
        token = _point((st.session_state.get(key) or {}).get("selection", {}).get("points") or [], positions)
        if token is not None:
            pick(token)

    return picked


def follow_point(event, key: str, positions: list[int] | None = None) -> None:
    """The same for a chart inside a fragment (whose rerun runs no widget callbacks and redraws only
    itself): a new click is followed and the whole page runs again; the selection the chart keeps
    is acted on once."""
    points = (event or {}).get("selection", {}).get("points") or []
    stamp = f"_followed_{key}"
    if not points or st.session_state.get(stamp) == str(points[0]):
        return
    st.session_state[stamp] = str(points[0])
    token = _point(points, positions)
    if token is not None and token != st.session_state.get(QUERY.key):
        pick(token)
        st.rerun()


def top_table(doc, weights: torch.Tensor, k: int = 10, name: str = "weight", extra: dict | None = None) -> pd.DataFrame:
    """The k tokens with the most weight, with their context in the text; only tokens that get any
    (a causal query's later keys, which it cannot see, are never listed). name: the weights'
    column; extra: more columns, name -> [n] values (a selection's mean beside its sum)."""
    w = torch.as_tensor(weights).float()
    seen = int((w != 0).sum())
    top, idx = torch.topk(w, min(k, seen)) if seen else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    rows = []
    for weight, i in zip(top.tolist(), idx.tolist()):
        context = common.span_text(doc.pieces, max(0, i - 8), min(doc.n, i + 9), 90)
        rows.append({"position": i, "token": doc.labels[i], name: weight,
                     **{column: float(values[i]) for column, values in (extra or {}).items()}, "context": context})
    return pd.DataFrame(rows, columns=["position", "token", name, *(extra or {}), "context"])


def top_picker(table: pd.DataFrame, key: str, what: str) -> None:
    """A table of tokens; ticking a row follows that token. Keyed by what it lists, so a new table
    starts unticked (a tick kept over a new table would name another token)."""
    def picked() -> None:
        chosen = st.session_state[key].selection.rows
        if chosen:
            pick(int(table.iloc[chosen[0]]["position"]))

    formats = {name: st.column_config.NumberColumn(format="%.4f") for name in table.columns
               if name not in ("position", "token", "context")}
    st.dataframe(table, width="stretch", hide_index=True, on_select=picked, selection_mode="single-row", key=key,
                 column_config={"position": st.column_config.NumberColumn(width="small"),
                                "token": st.column_config.TextColumn(width="small"), **formats})
    st.caption(f"Tick a row to follow that {what}." if len(table) else "No token gets any weight.")


_SHADED = """
export default function(component) {
  const { data, setTriggerValue, parentElement } = component;
  let box = parentElement.querySelector('.inspector-text');
  if (!box) {
    box = document.createElement('div');
    box.className = 'inspector-text';
    parentElement.appendChild(box);
  }
  box.innerHTML = data;
  const index = (node) => {
    const el = node && (node.nodeType === 1 ? node : node.parentElement);
    const tok = el && el.closest('[data-i]');
    return tok ? Number(tok.dataset.i) : null;
  };
  box.onmouseup = (e) => {
    const sel = window.getSelection();
    const i = index(e.target);
    if (e.shiftKey && i !== null) {  // a shift-click extends from the followed token (not the browser's caret)
      if (sel) sel.removeAllRanges();
      setTriggerValue('extend', i);
      return;
    }
    if (sel && !sel.isCollapsed && box.contains(sel.anchorNode)) {
      const a = index(sel.anchorNode), b = index(sel.focusNode);
      sel.removeAllRanges();
      if (a !== null && b !== null && a !== b) {
        setTriggerValue('span', [Math.min(a, b), Math.max(a, b)]);
        return;
      }
    }
    if (i !== null) setTriggerValue('pick', i);
  };
}
"""
_SHADED_CSS = """
.inspector-text [data-i] { cursor: pointer; border-radius: 2px; }
.inspector-text [data-i]:hover { box-shadow: 0 0 0 1px #888; }
.inspector-text .focus { outline: 2px solid #3366cc; }
.inspector-text .marked { text-decoration: underline 2px #3366cc; }
.inspector-text .ws { color: #8a6d3b; }
"""
_shaded = st.components.v2.component("inspector_text", js=_SHADED, css=_SHADED_CSS, isolate_styles=False)


def _clicked(key: str, selectable: bool) -> None:
    """A token clicked (followed), shift-clicked (the selection runs from the followed token to it) or
    a stretch selected with the mouse (those tokens), in the shaded text drawn with `key`; where no
    selection is read (not selectable), the token clicked or the stretch's first is followed."""
    event = st.session_state.get(key) or {}
    if event.get("pick") is not None:
        pick(int(event["pick"]))
    elif event.get("extend") is not None:
        here, there = int(st.session_state.get(QUERY.key, 0)), int(event["extend"])
        pick(*((min(here, there), [(min(here, there), max(here, there) + 1)]) if selectable else (there,)))
    elif event.get("span"):
        a, b = (int(x) for x in event["span"])
        pick(*((a, [(a, b + 1)]) if selectable else (a,)))


def text_view(doc, weights: torch.Tensor, focus: int, who: str = "", marked: torch.Tensor | None = None,
              key: str = "inspector_text", selectable: bool = False) -> None:
    """The text around the followed token, every token shaded by its weight; click a token to follow
    it; with selectable (the Dense page), shift-click or select a stretch with the mouse to read several
    together.

    who: the mechanism the weights are of, named when the token gets no attention from it."""
    if not bool(torch.as_tensor(weights).abs().sum() > 0):
        st.warning(f"Token {focus} attends to nothing{' under ' + who if who else ''}: every weight of its row is "
                   "zero, so its output is zero too.")
    start = max(0, focus - SPAN // 2)
    stop = min(doc.n, start + SPAN)
    chosen = frozenset() if marked is None else frozenset(marked.tolist())
    body = common.shaded_text(doc.text, doc.offsets, weights, start, stop, focus=focus, marked=chosen,
                              labels=doc.labels)
    _shaded(data=body, key=key, on_pick_change=lambda: _clicked(key, selectable),
            on_extend_change=lambda: _clicked(key, selectable), on_span_change=lambda: _clicked(key, selectable))
    st.caption((f"Tokens {start:,}–{stop - 1:,} of {doc.n:,} around token {focus:,}; shading is scaled to the "
                "largest weight in view. " if doc.n > SPAN else "Shading is scaled to the largest weight. ")
               + ("Click a token to follow it; shift-click, or select a stretch with the mouse, to read several "
                  "together." if selectable else "Click a token to follow it."))


def panel(run: Run, shown: Run, grid: int) -> None:
    """The Dense page's inspector: the followed token (or a selection) and what it attends to, or who
    attends to it; the shaded text, the row (or column) along the text, and its top tokens.
    shown: the run whose rows are read (the whole text, or the model's own windows)."""
    doc = run.doc
    follow = st.radio("Show", FOLLOW.choices, key=FOLLOW.key, horizontal=True, format_func=FOLLOWING.get,
                      help="what the token attends to is its row of the map; who attends to it is its column")
    focus = query_picker(doc, selectable=True)
    chosen = selected(doc)
    together = chosen is not None and focus in set(chosen.tolist())  # else outlined on the followed token's row
    if chosen is not None:
        where, clear = st.columns([5, 1], vertical_alignment="center")
        where.caption(f"{len(chosen):,} tokens selected ({describe_selection(chosen)}): "
                      + ("outlined on what the followed token attends to (it lies outside them); follow one of them "
                         "to read them together." if not together else
                         "their attention summed, and its mean per token." if follow == "row" else
                         "who attends to them is shown for the first one; pick “what it attends to” to read them "
                         "together."))
        clear.button("Clear selection", key="clear_selection", on_click=pick, args=(focus,))
    if follow == "column":
        if shown != run:
            st.info("Who attends to a token is measured over the whole text: pick that scope above.")
            return
        column = compute.key_column(run, focus, grid)
        text_view(doc, column, focus, selectable=True)
        _along(doc, column, f"Attention to token {focus} from every query", "inspector_column")
        top_picker(top_table(doc, column), f"top_queries_{focus}", "query")
        st.caption(f"Each query's weight on token {focus} (“{plain(doc.labels[focus])}”) as the model computes "
                   "it: its column of the map" + (", seen by the queries at or after it." if doc.causal else "."))
        return
    if together:
        total = compute.selection_row(shown, tuple(chosen.tolist()))
        text_view(doc, total, focus, marked=chosen, selectable=True)
        _along(doc, total, f"Summed attention of the {len(chosen):,} selected tokens", "inspector_row")
        top_picker(top_table(doc, total, name="summed", extra={"mean": total / len(chosen)}),
                   f"top_keys_{st.session_state[SELECTION.key]}", "key")
        return
    row = compute.query_row(shown, focus)
    text_view(doc, row, focus, marked=chosen, selectable=True)
    _along(doc, row, f"Attention of token {focus} over the text", "inspector_row")
    top_picker(top_table(doc, row), f"top_keys_{focus}", "key as the query")


def _along(doc, values: torch.Tensor, title: str, key: str) -> None:
    """A row (or column) of the map along the text: the pooled mean with its min-max band; a click
    on a point follows the token there."""
    fig = common.along_text({"weight": values}, doc.pieces, title=title, y_title="weight", height=260,
                            clickable=True, mechanisms=False)
    charts.show(st, fig, key=key, on_select=on_point(key), selection_mode="points")
