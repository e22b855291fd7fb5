"""Cached compute. Keys are strings and numbers, never tensors: the document
enters under an unhashed `_doc` argument beside its key, so changing a head,
a zoom or a colour reuses the encoding and every result already computed."""
from __future__ import annotations

import json
from collections import OrderedDict

import streamlit as st

import explorer
from explorer.core import attention
from explorer.core.stats import attention_stats
from explorer.core.encoding import load_model
from explorer.mechanisms import REGISTRY
from explorer.analysis.fidelity import fidelity
from explorer.core.pooling import pooled_map
from explorer.core.samples import load_sample


@st.cache_resource(show_spinner=False, max_entries=2)
def model(name: str):
    return load_model(name)


@st.cache_resource(show_spinner=False)
def _stores() -> dict[str, OrderedDict]:
    """Process-wide stores of results made with a progress bar (st.cache_* would show a spinner)."""
    return {}


def remembered(store: str, name: str, make, keep: int):
    """make()'s value, made once per name; each store keeps its `keep` newest values."""
    cache = _stores().setdefault(store, OrderedDict())
    if name in cache:
        cache.move_to_end(name)
        return cache[name]
    value = cache[name] = make()
    while len(cache) > keep:
        cache.popitem(last=False)
    return value


def encoded(args: dict, progress=None):
    """The Doc for these encoding arguments, made once; progress(done, total) is told per window."""
    from ui.state import doc_key

    def make():
        if args.get("synthetic"):
            return explorer.synthetic(**json.loads(args["synthetic"]))
        return explorer.encode(args["text"], model(args["model"]), layer=args["layer"],
                               window=args["window"] or None, progress=progress)

    return remembered("encodings", doc_key(args), make, keep=3)


@st.cache_data(show_spinner=False)
def sample(name: str) -> str:
    return load_sample(name)


def dense(doc_key: str, head: int, grid: int, _doc):
    """The streamed dense pass of one head, made once, with a progress bar while it runs."""

    def make():
        q, k, v = _doc.head(head)
        bar = st.progress(0.0, text="dense attention pass")
        try:
            return attention_stats(q, k, v, causal=_doc.causal, grid=grid, progress=lambda done, n: bar.progress(
                done / n, text=f"dense attention pass: {done:,} of {n:,} queries"))
        finally:
            bar.empty()

    return remembered("dense", f"{doc_key}|{head}|{grid}", make, keep=8)


def params_json(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


@st.cache_resource(show_spinner=False, max_entries=32)
def run(doc_key: str, head: int, mech: str, params: str, _doc):
    """A mechanism's Result on one head; params is params_json(...)."""
    q, k, v = _doc.head(head)
    return REGISTRY[mech].run(q, k, v, **REGISTRY[mech].for_head(json.loads(params), head, _doc.heads))


@st.cache_resource(show_spinner=False, max_entries=32)
def fidelity_of(doc_key: str, head: int, mech: str, params: str, _doc, max_rows: int = 2048):
    q, k, v = _doc.head(head)
    res = run(doc_key, head, mech, params, _doc)
    return fidelity(q, k, v, res, causal=_doc.causal, max_rows=max_rows)


@st.cache_resource(show_spinner=False, max_entries=32)
def window_map(doc_key: str, head: int, mech: str, params: str, window: tuple, grid: int, _doc, per_bin: int = 4):
    """Pooled map of a (query, key) window for dense (mech "") or a mechanism."""
    q, k, v = _doc.head(head)
    if mech:
        fn = run(doc_key, head, mech, params, _doc).weights
    else:
        fn = lambda rows: attention.weights(q, k, rows, _doc.causal)  # noqa: E731
    q0, q1, k0, k1 = window
    return pooled_map(fn, 1, _doc.n, rows=(q0, q1), cols=(k0, k1), grid=grid, per_bin=per_bin, device=q.device)


def query_row(doc_key: str, head: int, mech: str, params: str, query: int, _doc):
    """One query's attention row over the whole text (dense when mech is "")."""
    import torch

    q, k, _ = _doc.head(head)
    rows = torch.tensor([query], device=q.device)
    if mech:
        return run(doc_key, head, mech, params, _doc).weights(rows)[0, 0].cpu()
    return attention.weights(q, k, rows, _doc.causal)[0, 0].cpu()


@st.cache_data(show_spinner=False, max_entries=16)
def boundaries(doc_key: str, mode: str, length: int, split: bool, _doc) -> tuple[list[int], int]:
    """Segment starts from the text's own structure, and how many units it gave before splitting."""
    from explorer.core import segments

    found = segments.by_mode(mode, _doc.n, length, _doc.text, _doc.offsets, split=False)
    starts = segments.split_long(found, _doc.n, length) if split else found
    return starts.tolist(), found.numel()
