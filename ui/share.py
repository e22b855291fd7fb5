"""Settings in the URL and as a JSON file: a copied link or a saved file reproduces the view.

The URL carries every setting the registry marks `url` (ui.settings), as JSON values, plus
"run" (the text was encoded and can be encoded again). Values coming back go through each
setting's own check. A pasted or uploaded text travels as the key of its copy in this server's
text store (ui.texts, the setting "text"); samples and the synthetic source need no copy.
"""
from __future__ import annotations

import json

import streamlit as st

from ui import settings
from ui.messages import plain
from ui.state import REPRODUCIBLE

RUN = "run"
MAX_KEYS = 200  # keys read from one link or file; the rest are ignored (and counted)
MAX_VALUE = 4096  # characters of one value in a link


def apply(values: dict, owners: set[str]) -> bool:
    """Put outside settings into session state; True when they ask for the text to be encoded
    and every one of them was accepted.

    owners: the pages of the app; a key of a page not run yet waits for it (settings.declare).
    Refused and unknown keys are noted for `notices`.
    """
    if not isinstance(values, dict):
        raise ValueError("settings must be a JSON object")
    pending = st.session_state.setdefault(settings.PENDING, {})
    ignored, complete = [], True
    for i, (key, value) in enumerate(values.items()):
        if key == RUN:
            continue
        if i >= MAX_KEYS:
            ignored.append(f"{len(values) - MAX_KEYS} more")
            break
        if key in settings.SETTINGS and settings.SETTINGS[key].url:
            complete &= settings.set_from_outside(settings.SETTINGS[key], value)
        elif isinstance(key, str) and settings.owner_page(key) in owners:
            pending[key] = value
        else:
            ignored.append(str(key))
    if ignored:
        st.session_state["_ignored_settings"] = ignored
    # a view that cannot be reproduced as asked is not encoded on its own
    return complete and values.get(RUN) is True and reproducible()


def restore_from_url(owners: set[str]) -> bool:
    """Apply the URL's settings once per session; True when the view should be encoded now."""
    if st.session_state.get("_restored"):
        return False
    st.session_state["_restored"] = True
    st.session_state["_first_visit"] = not st.query_params  # a plain visit: nothing asked for yet
    values, oversized = {}, False
    for key in list(st.query_params)[: MAX_KEYS + 1]:
        raw = st.query_params[key]
        if len(raw) > MAX_VALUE:
            settings.refuse(key, f"its value is longer than {MAX_VALUE:,} characters")
            oversized = True
            continue
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return apply(values, owners) and not oversized if values else False


def first_visit() -> bool:
    """True once, on the first run of a session opened without settings: show a result at once."""
    return st.session_state.pop("_first_visit", False)


def reproducible() -> bool:
    """Whether a link can bring this session's text back: a sample, synthetic, or a stored text."""
    source = st.session_state.get("source", settings.SETTINGS["source"].default)  # a link may leave it out
    return source in REPRODUCIBLE or bool(st.session_state.get("text"))


def current() -> dict:
    """The settings to share now, JSON-ready."""
    out = settings.shared()
    out[RUN] = bool(st.session_state.get("encoded")) and reproducible()
    return out


def publish_to_url() -> None:
    """Write the current settings into the address bar (only those that changed), and nothing
    else: a refused or unknown value from a link leaves it, so a copied link does not carry it on."""
    now = current()
    for key in [k for k in st.query_params if k not in now]:
        del st.query_params[key]
    for key, value in now.items():
        text = json.dumps(value)
        if st.query_params.get(key) != text:
            st.query_params[key] = text


def notices() -> None:
    """Say once which outside settings were refused or ignored, each named as plain text."""
    refused = settings.take_refusals()
    if refused:
        st.warning("Settings not applied:\n" + "\n".join(f"- {plain(k)}: {plain(why)}" for k, why in refused[:20])
                   + (f"\n- and {len(refused) - 20} more" if len(refused) > 20 else ""))
    ignored = st.session_state.pop("_ignored_settings", None)
    if ignored:
        shown = ", ".join(plain(k[:40]) for k in ignored[:20])
        st.warning(f"Ignored settings this app does not have: {shown}" + (" …" if len(ignored) > 20 else ""))


def panel(owners: set[str]) -> None:
    """Sidebar expander: download the settings as JSON, load them back, a note on pasted text."""
    with st.expander("Share and save"):
        st.caption("The address bar holds every setting: copy it to share this view.")
        if st.session_state.get("source") not in REPRODUCIBLE:
            st.caption("A pasted or uploaded text travels as a key to its copy on this server, kept while there "
                       "is room (the oldest texts are removed first).")
        st.download_button("Settings (JSON)", json.dumps(current(), indent=1), "attention-settings.json",
                           "application/json")
        upload = st.file_uploader("Load settings", type=["json"], key="settings_upload")
        if upload is not None and st.session_state.get("_loaded") != upload.file_id:
            st.session_state["_loaded"] = upload.file_id
            try:
                load(json.loads(upload.getvalue().decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                st.error(f"That file is not settings JSON: {plain(str(err))}")
                return
            st.rerun()


def load(values: dict) -> None:
    """Settings to apply on the next run before any widget exists, as a loaded settings file is
    (with "run": true, what they name is encoded then). A text named by its key is opened again
    even when this session opened it before (ui.sidebar reopens a key once)."""
    if isinstance(values, dict) and values.get("text"):
        st.session_state.pop("_reopened", None)
    st.session_state["_pending_file"] = values


def take_pending_file(owners: set[str]) -> bool:
    """Settings loaded from a file on the previous run, applied before any widget exists."""
    loaded = st.session_state.pop("_pending_file", None)
    if loaded is None:
        return False
    try:
        return apply(loaded, owners)
    except ValueError as err:
        st.sidebar.error(str(err))
        return False
