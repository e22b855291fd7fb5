"""The shared sidebar: which text, which model and layer, which head; the Run button."""
from __future__ import annotations

import json
import time

import streamlit as st

from explorer.core.device import pick_device
from explorer.core.samples import sample_names
from ui import compute, share, state

SOURCES = ("Sample", "Paste", "Upload", "Synthetic")
MAX_UPLOAD_BYTES = 20 * 2**20


def _text() -> str:
    """The text the chosen source holds now ('' when there is none)."""
    source = st.session_state["source"]
    if source == "Sample":
        names = sample_names()
        st.session_state.setdefault("sample", names[0])
        name = st.selectbox("Sample text", names, key="sample")
        return compute.sample(name)
    if source == "Paste":
        return st.text_area("Paste a text", key="pasted", height=160, placeholder="Paste a long document here…")
    if source == "Upload":
        upload = st.file_uploader("A .txt or .md file", type=["txt", "md"])
        if upload is None:
            return ""
        if upload.size > MAX_UPLOAD_BYTES:
            st.error(f"That file is {upload.size / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB.")
            return ""
        try:
            return upload.getvalue().decode("utf-8")
        except UnicodeDecodeError:
            st.error("That file is not UTF-8 text.")
            return ""
    return ""


def _synthetic_args() -> dict:
    n = st.number_input("Tokens", 1, 200_000, key="synth_n", step=256)
    needles = st.number_input("Planted needles", 0, 64, key="synth_needles")
    margin = st.number_input("Needle logit margin", 0.0, 40.0, key="synth_margin", step=0.5)
    seed = st.number_input("Seed", 0, 2**31 - 1, key="synth_seed")
    spec = {"n": int(n), "heads": 4, "head_dim": 32, "seed": int(seed),
            "needles": int(needles) if n >= 2 else 0, "margin": float(margin)}
    return {"text": "", "model": "synthetic", "layer": 0, "window": 0, "synthetic": json.dumps(spec, sort_keys=True)}


def _model_args(text: str) -> dict:
    st.text_input("Model", key="model", help="'minilm' (bundled, offline), a Hugging Face id or a local folder")
    st.number_input("Layer", 0, 96, key="layer")
    st.number_input("Window (tokens per model pass, 0 = model maximum)", 0, 32768, key="window", step=64)
    return {"text": text, "model": st.session_state["model"].strip(), "layer": int(st.session_state["layer"]),
            "window": int(st.session_state["window"]), "synthetic": ""}


def _run(args: dict) -> None:
    with st.status("Encoding…", expanded=True) as status:
        bar = st.progress(0.0, text="loading the model")
        start = time.perf_counter()
        try:
            if not args["synthetic"]:
                compute.model(args["model"])
            doc = compute.encoded(args, progress=lambda done, total: bar.progress(
                done / total, text=f"window {done} of {total}"))
        except ValueError as err:
            status.update(label="Could not encode", state="error")
            st.error(str(err))
            return
        st.session_state["encoded"] = args
        status.update(label=f"Encoded {doc.n:,} tokens in {time.perf_counter() - start:.1f} s",
                      state="complete", expanded=False)


def render() -> None:
    """Draw the sidebar; encode on Run (or when a shared link asks); keep the head in range."""
    auto = share.restore_from_url() or share.take_pending()
    state.init()
    share.keep()
    with st.sidebar:
        st.radio("Text", SOURCES, key="source", horizontal=True)
        if st.session_state["source"] == "Synthetic":
            args = _synthetic_args()
        else:
            text = _text()
            st.caption(f"{len(text):,} characters")
            args = _model_args(text)
        if st.button("Run", type="primary", width="stretch") or auto:
            if not args["synthetic"] and not args["text"].strip():
                st.warning("The text is empty: pick a sample, paste or upload a text first.")
            else:
                _run(args)
        got = state.current()
        if got is not None:
            _, doc = got
            st.session_state["head"] = min(int(st.session_state["head"]), doc.heads - 1)
            st.number_input("Head", 0, doc.heads - 1, key="head")
            st.caption(f"{doc.n:,} tokens · {doc.heads} heads · layer {doc.layer} · {doc.model}")
        st.caption(f"Device: {pick_device()}")
        share.panel()
    share.publish_to_url()
