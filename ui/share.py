"""Settings in the URL and as JSON: a copied link or a saved file reproduces the view.

Every setting lives in session state under a documented key (ui.state); the
URL carries those keys as JSON values. A link cannot carry a pasted or
uploaded text: it reopens the view only for samples and the synthetic source.
"""
from __future__ import annotations

import json

import streamlit as st


SHARED = ("source", "sample", "model", "layer", "window", "head", "grid", "synth_n", "synth_needles",
          "synth_margin", "synth_seed", "zoom_q", "zoom_k", "query", "pool", "log_colour", "cmp_mechs",
          "dil_mechs", "dil_points", "dil_queries", "dil_topk", "dil_sample", "dil_margin", "dil_needle_margin",
          "dil_noise", "dil_longest", "dil_key_at", "dil_needle_log")
LISTS = ("cmp_mechs", "dil_mechs")
CHOICES = {"dil_sample": ("spread", "last"), "dil_longest": (256, 1024, 4096, 16384, 65536)}
REPRODUCIBLE = ("Sample", "Synthetic")


def _shared_keys() -> list[str]:
    return [k for k in SHARED if k in st.session_state] + sorted(
        k for k in st.session_state if isinstance(k, str) and k.startswith("p."))


def settings() -> dict:
    """The current settings, JSON-ready; `run` says a text was encoded and can be re-encoded."""
    out = {}
    for k in _shared_keys():
        value = st.session_state[k]
        out[k] = list(value) if isinstance(value, tuple) else value
    out["run"] = bool(st.session_state.get("encoded")) and st.session_state.get("source") in REPRODUCIBLE
    return out


INTS = ("layer", "window", "head", "grid", "synth_n", "synth_needles", "synth_seed", "query")


def _valid(key: str, value) -> bool:
    """Whether a setting from outside (a URL, a file) has the shape its widget accepts."""
    from explorer.core.samples import sample_names
    from ui.sidebar import SOURCES

    if key == "source":
        return value in SOURCES
    if key == "sample":
        return value in sample_names()
    if key in INTS:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if key in ("zoom_q", "zoom_k"):
        return isinstance(value, list) and len(value) == 2 and all(isinstance(x, int) for x in value)
    if key in LISTS:
        return isinstance(value, list) and all(isinstance(x, str) for x in value)
    if key in CHOICES:
        return value in CHOICES[key]
    return isinstance(value, (str, int, float, bool))


def apply(values: dict) -> bool:
    """Put valid settings into session state; True when they ask for the text to be encoded.

    Settings that do not fit their widget are skipped and named in a warning.
    """
    if not isinstance(values, dict):
        raise ValueError("settings must be a JSON object")
    skipped = []
    for key, value in values.items():
        if key not in SHARED and not (isinstance(key, str) and key.startswith("p.")):
            continue
        if not _valid(key, value):
            skipped.append(key)
            continue
        st.session_state[key] = tuple(value) if key in ("zoom_q", "zoom_k") else value
    if skipped:
        st.session_state["_skipped"] = skipped
    return bool(values.get("run")) and st.session_state.get("source") in REPRODUCIBLE


def restore_from_url() -> bool:
    """Apply the URL's settings once per session; True when the view should be encoded now."""
    if st.session_state.get("_restored"):
        return False
    st.session_state["_restored"] = True
    values = {}
    for key in st.query_params:
        try:
            values[key] = json.loads(st.query_params[key])
        except json.JSONDecodeError:
            values[key] = st.query_params[key]
    return apply(values) if values else False


def keep() -> None:
    """Re-assign shared widget values so they outlive a page that does not draw their widget.

    Streamlit drops a widget's state on a run that does not draw it; settings
    made on one page (zoom, mechanism parameters) must survive a visit to another.
    """
    for key in _shared_keys():
        st.session_state[key] = st.session_state[key]


def publish_to_url() -> None:
    """Write the current settings into the address bar (only those that changed)."""
    for key, value in settings().items():
        text = json.dumps(value)
        if st.query_params.get(key) != text:
            st.query_params[key] = text


def panel() -> None:
    """Sidebar expander: download the settings as JSON, load them back, a note on pasted text."""
    skipped = st.session_state.pop("_skipped", None)
    if skipped:
        st.warning(f"Ignored settings that do not fit: {', '.join(map(str, skipped))}")
    with st.expander("Share and save"):
        st.caption("The address bar holds every setting: copy it to share this view.")
        if st.session_state.get("source") not in REPRODUCIBLE:
            st.caption("A link cannot carry a pasted or uploaded text: whoever opens it must paste the same text.")
        st.download_button("Settings (JSON)", json.dumps(settings(), indent=1), "attention-settings.json",
                           "application/json")
        upload = st.file_uploader("Load settings", type=["json"], key="settings_upload")
        if upload is not None and st.session_state.get("_loaded") != upload.file_id:
            st.session_state["_loaded"] = upload.file_id
            try:
                st.session_state["_pending"] = json.loads(upload.getvalue().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                st.error(f"That file is not settings JSON: {err}")
                return
            st.rerun()


def take_pending() -> bool:
    """Settings loaded from a file on the previous run, applied before any widget exists."""
    pending = st.session_state.pop("_pending", None)
    if pending is None:
        return False
    try:
        return apply(pending)
    except ValueError as err:
        st.sidebar.error(str(err))
        return False
