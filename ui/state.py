"""Session state: the documented keys, and access to the encoded document.

st.session_state keys
  source     "Sample" | "Paste" | "Upload" | "Synthetic": where the text comes from
  sample     title of the chosen sample text
  pasted     the pasted text (kept across pages and runs; never put in the URL)
  model      "minilm", a Hugging Face id or a local checkpoint path
  layer      layer whose Q/K/V are shown
  head       head shown on every page (changing it never re-encodes)
  window     text tokens per model pass (0: the model's maximum)
  synth_n, synth_needles, synth_margin, synth_seed   synthetic source settings
  encoded    the arguments of the last successful encoding (a dict), or absent
  grid       display resolution of attention maps
  zoom_q, zoom_k   (start, stop) of the query and key window every map shows
  query      the query token the inspectors follow
  pool, log_colour  map style: mean or max pooling, log colour scale
  cmp_mechs  mechanisms chosen on the compare page
  p.<mechanism>.<param>  a mechanism's parameter, shared by its page and the compare page
  _restored  set once the URL's settings were applied to this session
"""
from __future__ import annotations

import hashlib

import streamlit as st

from explorer.core.doc import Doc

DEFAULTS = {"source": "Sample", "model": "minilm", "layer": 0, "head": 0, "window": 0, "grid": 160,
            "synth_n": 2048, "synth_needles": 4, "synth_margin": 8.0, "synth_seed": 0, "query": 1}


def init() -> None:
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def doc_key(args: dict) -> str:
    """A stable name for an encoding (the text enters by its hash): what the caches key on."""
    parts = [f"{k}={args[k]}" for k in sorted(args) if k != "text"]
    return "|".join([f"text={text_key(args.get('text', ''))}"] + parts)


def current() -> tuple[str, Doc] | None:
    """(doc key, Doc) of the last encoding, from the cache; None before the first run."""
    from ui.compute import encoded

    args = st.session_state.get("encoded")
    if not args:
        return None
    with st.spinner("Encoding the text again (it left the cache)…"):
        return doc_key(args), encoded(args)


def require_doc() -> tuple[str, Doc, int]:
    """The page's (doc key, doc, head), or a hint and a stop when nothing is encoded yet."""
    got = current()
    if got is None:
        st.info("Choose a text in the sidebar and press **Run** to encode it.")
        st.stop()
    key, doc = got
    head = min(int(st.session_state.get("head", 0)), doc.heads - 1)
    return key, doc, head
