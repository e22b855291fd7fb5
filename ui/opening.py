"""The first picture of a fresh server: the default text's dense map as a plain first visit opens
it, saved on disk (ui.saved) once a visitor has been shown it live, and drawn for the first visitor
of a later start while that server still imports torch, loads the model and encodes the text (10 to
15 s on two cores). The live page takes its place as soon as the text is encoded.

The picture is saved under a name made of everything it came from: the model's installed files
(explorer.core.bundled.files_key, read without loading the model), the text, the window, the map's
settings and the code that measured and drew it; so a saved picture is never shown for another model,
text or code. Only a bundled model has files to check before it loads, so only it gets one.
"""
from __future__ import annotations

import threading

import pandas as pd
import plotly.io as pio
import streamlit as st

from explorer.analysis import windows
from explorer.core import binned, binreduce, bundled, encoding, stats
from explorer.figures import common, segments
from ui import compute, document, maps, saved, sidebar
from ui.messages import LOG, plain

PAGE = "Dense attention"  # the page a plain first visit opens
MAP_SETTINGS = (maps.POOL, maps.COLOUR, maps.ROBUST, maps.GRID)  # at their defaults in the opening view
CODE = (encoding, windows, stats, binned, binreduce, compute, maps, common, segments)  # what made the picture
_drawn_live = threading.Event()  # this process has drawn the opening map live: it is in memory, shown at once


def _name() -> str | None:
    """The saved picture's name for today's default text, model and code (None: not a bundled model)."""
    enc = sidebar.opening_encoding()
    files = bundled.files_key(enc.model)
    if files is None:
        return None
    return saved.key("opening map", enc.model, files, enc.text_key, enc.window,
                     [s.default for s in MAP_SETTINGS], code=CODE)


def is_saved() -> bool:
    """Whether today's default text, model and code have a saved first picture."""
    name = _name()
    return name is not None and saved.Saved.from_env().has(name)


def show(page: str):
    """On a plain first visit (no link, nothing encoded yet) to the Dense page of a server that has
    not drawn it live yet: the saved picture, in a placeholder the caller empties when the page
    draws. None when there is nothing to show."""
    if page != PAGE or _drawn_live.is_set() or st.query_params or st.session_state.get("_restored"):
        return None
    name = _name()
    table = saved.Saved.from_env().get(name) if name else None
    if table is None:
        return None
    try:
        title, fig = str(table["title"][0]), pio.from_json(table["figure"][0])
    except (KeyError, IndexError, ValueError):  # a damaged picture is made again, never shown
        LOG.warning("saved first picture %s unreadable", name, exc_info=True)
        return None
    spot = st.empty()
    with spot.container():
        st.title(PAGE)
        st.info("Loading the model and encoding the text. Meanwhile, this is the map this server drew for the "
                f"same text and model files when it last ran: {plain(title)}. The live page replaces it in a few "
                "seconds.")
        st.plotly_chart(fig, key="opening_map", width="stretch", config={"staticPlot": True})
    return spot


def is_opening() -> bool:
    """Whether the session's whole-text map is what a plain first visit opens on: the default text and
    model, the layer and head the app picked, and the map's settings at their defaults."""
    enc = document.encoding()
    if enc is None or not st.session_state.get(sidebar.AUTO_HEAD.key):
        return False
    if any(st.session_state.get(s.key, s.default) != s.default for s in MAP_SETTINGS):
        return False
    default = compute.sample(sidebar.DEFAULT_SAMPLE)  # compared by length first: only a likely match is hashed
    return len(enc.text) == len(default) and enc.at(sidebar.LAYER.default) == sidebar.opening_encoding()


def keep(fig, title: str) -> None:
    """The opening map as the page drew it (exact statistics, the whole text), saved once."""
    _drawn_live.set()
    name = _name()
    shelf = saved.Saved.from_env()
    if name and not shelf.has(name):
        shelf.put(name, pd.DataFrame({"title": [title], "figure": [fig.to_json()]}))

