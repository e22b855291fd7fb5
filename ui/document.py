"""The session's current document: the last encoding, fetched from the cache (made again if dropped)."""
from __future__ import annotations

import streamlit as st

from explorer.core.doc import Doc, ModelCapture
from ui import compute
from ui.messages import plain
from ui.state import Encoding, Run

ENCODED = "encoded"  # session key: the Encoding of the last successful encoding (ui.state)
NOT_ENCODED = "_not_encoded"  # session key: why the last Run did not replace it, until one does
ORIGIN = "_origin"  # session key: (text key, model, sentence): where the text about to be shown came from


def encoding() -> Encoding | None:
    """The session's last successful encoding; None before the first."""
    return st.session_state.get(ENCODED)


def current() -> Run | None:
    """Exact attention on the session's current document and head (the head brought into the
    document's range): the one place both are resolved. None before the first encoding."""
    enc = encoding()
    if enc is None:
        return None
    doc = compute.encoded(enc)
    return Run(enc, min(int(st.session_state.get("head", 0)), doc.heads - 1), doc=doc)


def require() -> Run:
    """current(), or a hint and a stop when nothing is encoded."""
    run = current()
    if run is None:
        st.info("Choose a text in the sidebar and press **Run** to encode it.")
        st.stop()
    why = st.session_state.get(NOT_ENCODED)
    if why:
        st.warning(f"Still showing the previous text ({run.doc.n:,} tokens, “{plain(opening(run.doc))}”): {why}.")
    _say_origin(run.encoding)
    return run


def note_origin(enc: Encoding, said: str) -> None:
    """Say `said` (markdown, escaped by the caller) above every page while enc's text and model are shown."""
    st.session_state[ORIGIN] = (enc.text_key, enc.model, said)


def _say_origin(enc: Encoding) -> None:
    """The note of note_origin while its text is shown; forgotten once another text or model is."""
    origin = st.session_state.get(ORIGIN)
    if origin is None:
        return
    if origin[:2] == (enc.text_key, enc.model):
        st.info(origin[2])
    else:
        del st.session_state[ORIGIN]


def opening(doc: Doc, words: int = 8) -> str:
    """The first words of a Doc's text, to name which text a page shows."""
    head = doc.text.split()[:words]
    return " ".join(head) + (" …" if len(doc.text.split(maxsplit=words)) > words else "")


def shown_as(doc: Doc) -> str:
    """Which attention the dense charts show, in words: the model's own rule, or the plain softmax."""
    rule = doc.model_rule
    if doc.rule is None:
        return f"Dense attention here is the plain softmax of q·k/√d ({rule.describe()}): these vectors have no model."
    what = ("the same as the plain softmax" if rule.is_plain
            else "the plain softmax stays the yardstick mechanisms are measured against")
    return (f"Dense attention is shown as this layer of the model computes it ({rule.describe()}, scale "
            f"{rule.scaling:.4g}): {what}.")


def rules_by_layer(capture: ModelCapture) -> str:
    """The layers' rules in words when they differ (local and global layers), else ''."""
    groups: dict[str, list[int]] = {}
    for d in capture.docs:
        groups.setdefault(d.model_rule.describe(), []).append(d.layer)
    if len(groups) < 2:
        return ""
    parts = [f"layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}: {rule}"
             for rule, layers in groups.items()]
    return "Layers attend differently: " + "; ".join(parts) + "."
