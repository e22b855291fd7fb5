"""The computations every page shares, each through the one cache (ui.cache) under a Run.

Changing a head, a zoom or a colour reuses the encoding and every result already made:
keys hold the Run (encoding, head, mechanism, parameters) and what else the value depends on.
"""
from __future__ import annotations

import json
from dataclasses import replace
import time
from typing import Callable

import pandas as pd
import torch

import explorer
from explorer.analysis import experiment, model_view, remedies, sinks, windows
from explorer.analysis.fidelity import Fidelity, fidelity
from explorer.core import encoding, segments
from explorer.core.attention import summed_rows
from explorer.core.doc import ModelCapture
from explorer.core.encoding import LoadedModel, encode_layers, load_model, tokenize
from explorer.core.pooling import PooledMap, pooled_map
from explorer.core.rows import preview_first, sample_rows
from explorer.core.samples import load_sample
from explorer.core.stats import AttentionStats, by_position, stream_stats
from explorer.mechanisms import REGISTRY, Result
from ui import saved
from ui.cache import cached, freeze, heavy_step, report, store
from ui.state import EVERY, Encoding, Run

WINDOWS = "own windows"  # the Run mech of the model's own windows (not a mechanism of the registry)
FIDELITY_ROWS = 2048  # queries fidelity is measured on, evenly spaced, on long texts
PREVIEW_ROWS = 512  # evenly spaced queries the dense pass computes first (ui.refine shows them)
SINK_PROBE = 512  # a causal LM's first tokens on which the layer it opens on is chosen (sink_opening)
SNAPSHOT_S = 1.0  # how often the dense pass offers what it has so far
MAP_ROWS_PER_BIN = 4  # queries pooled per row bin of a mechanism's map on long windows
# Parameters the library takes as tensors, which a Run carries as nested tuples (its parameters are
# frozen, hashable values, so that it can be a cache key): routing's fitted router
TENSOR_PARAMS = {"routing": ("router",)}


def model(name: str, allow_download: bool = False) -> LoadedModel:
    """A loaded model (shared by every session); a download only when the person allowed one."""
    return cached(("model", name), lambda: load_model(name, allow_download=allow_download),
                  label="Loading the model")


def token_count(enc: Encoding) -> int:
    """Tokens of the encoding's text for its model, its special ones left out."""
    return cached(("token count", enc.model, enc.text_key),
                  lambda: len(tokenize(enc.text, model(enc.model))[0]), label="Counting tokens")


def first_tokens(enc: Encoding, count: int) -> Encoding:
    """The same encoding over the start of its text that holds its first `count` tokens."""
    return cached(("first tokens", enc, count), lambda: enc.with_text(encoding.first_tokens(enc.text, model(enc.model),
                                                                                           count)))


def sample(name: str) -> str:
    return cached(("sample", name), lambda: load_sample(name))


def encoded(enc: Encoding) -> explorer.Doc:
    """The Doc of this encoding (ui.sidebar makes it), made once per process; a layer of a capture
    of every layer (capture) is taken from it, not encoded again."""
    held = store().peek(("capture", enc.at(EVERY)))
    if held is not None and enc.layer in held.layers:
        return held.doc(enc.layer)

    def make():
        if enc.synthetic:
            return explorer.synthetic(**json.loads(enc.synthetic))
        return explorer.encode(enc.text, model(enc.model), layer=enc.layer, window=enc.window or None,
                               progress=report)

    return cached(("encoding", enc), make, label="Encoding the text, model windows")


def capture(enc: Encoding) -> ModelCapture:
    """Every layer of the model over the text, from one windowed forward pass (ValueError for synthetic)."""
    if enc.synthetic:
        raise ValueError("synthetic vectors have no model layers: encode a text to see the whole model")
    every = enc.at(EVERY)
    return cached(("capture", every), lambda: encode_layers(enc.text, model(enc.model), window=enc.window or None,
                                                            progress=report),
                  label="Encoding every layer, model windows")


def content_heads(enc: Encoding) -> pd.DataFrame:
    """Per layer and head, how much the restarting window positions shape its map (analysis.windows):
    read from disk for a text seen before (ui.saved), else measured on a capture of every layer and saved."""
    def make():
        table = saved.Saved.from_env().get(_heads_name(enc))
        if table is None:
            table = windows.content_heads(capture(enc), progress=report)
            saved.Saved.from_env().put(_heads_name(enc), table)
        return table

    return cached(("content heads", enc.at(EVERY)), make,
                  label="Finding the heads where content, not window positions, dominates: layers")


def heads_known(enc: Encoding) -> bool:
    """Whether content_heads needs no capture of every layer: made already, or saved on disk."""
    return ("content heads", enc.at(EVERY)) in store() or saved.Saved.from_env().has(_heads_name(enc))


def _heads_name(enc: Encoding) -> str:
    """The saved content heads' name: the model's weights, the text, the window and the code that measures them."""
    return saved.key("content heads", enc.model, weights_key(enc.model), enc.text_key, enc.window,
                     code=(windows, encoding))


def sink_opening(enc: Encoding) -> tuple[int, int, str]:
    """The layer and head a causal LM opens on, where its attention sinks form (analysis.sinks.sink_layer),
    judged on every layer over the text's first SINK_PROBE tokens: one short forward pass."""
    def make():
        lm = model(enc.model)
        return sinks.sink_layer(encode_layers(encoding.first_tokens(enc.text, lm, SINK_PROBE), lm).docs)

    return cached(("sink opening", enc.at(EVERY)), make, label="Finding the layer where the model's attention sinks")


def weights_key(name: str) -> str:
    """A hash of the loaded model's configuration and weights (ui.saved): what a saved table came from."""
    return cached(("weights key", name), lambda: saved.weights_key(model(name).model))


def opened_because(run: Run) -> str | None:
    """Why the page opened on this layer and head, when the app chose them (see ui.sidebar): for content
    over restarting window positions, or for a causal LM's attention sink."""
    enc = run.encoding
    if enc.synthetic:
        return None
    sink = store().peek(("sink opening", enc.at(EVERY)))
    if sink is not None and sink[:2] == (run.doc.layer, run.head):
        layer, head, why = sink
        return f"Opened on layer {layer}, head {head}, where this model's attention sinks form: {why}."
    held = store().peek(("content heads", enc.at(EVERY)))
    if held is None:
        return None
    try:
        layer, head, why = windows.default_layer_head(held)
    except ValueError:  # no head measurable: the text is about one window long
        return None
    return f"Opened here because positions restart in every model window. {why}" \
        if (layer, head) == (run.doc.layer, run.head) else None


def head_stats(run: Run) -> dict:
    """The model view's statistics of every head of the run's layer, on evenly spaced queries."""
    rows = sample_rows(run.doc.n, model_view.QUERIES)
    return cached(("layer stats", run.doc_key), lambda: model_view.layer_stats(run.doc, rows),
                  label="Measuring this layer's heads")


def model_grid(enc: Encoding, queries: int, local: int, mech: str | None, params: dict) -> pd.DataFrame:
    """The model view's table: every layer and head (analysis.model_view), a mechanism's error on request."""
    return cached(_grid_key(enc, queries, local, mech, params), lambda: _grid(enc, queries, local, mech, params),
                  label="Measuring every layer and head, steps")


def _grid_key(enc: Encoding, queries: int, local: int, mech: str | None, params: dict) -> tuple:
    return ("model view", enc.at(EVERY), queries, local, mech, freeze(params))


def _grid(enc: Encoding, queries: int, local: int, mech: str | None, params: dict) -> pd.DataFrame:
    mechanism = REGISTRY[mech] if mech else None
    return model_view.model_view(capture(enc), queries, local, mechanism, params, progress=report)


def first_window(enc: Encoding) -> Encoding | None:
    """The text's first model window as an encoding of its own, when the text is longer than one
    window (the model view shows it first); None for a text of one window or synthetic vectors."""
    if enc.synthetic:
        return None
    window = enc.window or model(enc.model).max_tokens
    return first_tokens(enc, window) if token_count(enc) > window else None


def model_grid_now(enc: Encoding, queries: int, local: int, mech: str | None,
                   params: dict) -> tuple[pd.DataFrame, Encoding, str | None]:
    """(the whole text's model view, its encoding, None) once made; before that, for a text longer than
    one model window, (its first window's model view, that window's encoding, what the whole text's is
    doing), the whole text's made on a thread of its own after the first window's (the two would share
    the CPU): one window's forward pass and statistics are what a first look needs, in a fraction of
    the time."""
    key = _grid_key(enc, queries, local, mech, params)
    held = store().peek(key)
    first = None if held is not None else first_window(enc)
    if first is None:
        return (held if held is not None else model_grid(enc, queries, local, mech, params)), enc, None
    preview = model_grid(first, queries, local, mech, params)
    failed = store().peek(("model view failed", *key[1:]))
    if failed is not None:
        return preview, first, f"the whole text could not be measured: {failed}"
    if store().flight(key) is None:
        def whole() -> pd.DataFrame:
            with heavy_step():  # a hosted demo's worker slots count it, as they count the dense pass
                return _whole(enc, queries, local, mech, params)

        store().background(key, whole, name="model view")
    return preview, first, grid_progress(enc, queries, local, mech, params)


def _whole(enc: Encoding, queries: int, local: int, mech: str | None, params: dict) -> pd.DataFrame:
    """The whole text's model view in the background; a failure is kept (its message), not retried."""
    try:
        return _grid(enc, queries, local, mech, params)
    except ValueError as err:
        store().get(("model view failed", *_grid_key(enc, queries, local, mech, params)[1:]), lambda: str(err))
        raise


def grid_progress(enc: Encoding, queries: int, local: int, mech: str | None, params: dict) -> str | None:
    """Where the whole text's model view is, in words; None once it is made (or no longer under way)."""
    encoding_flight = store().flight(("capture", enc.at(EVERY)))
    if encoding_flight is not None:
        done, total = encoding_flight.progress or (0, 0)
        return f"encoding every layer, model window {done:,} of {total:,}" if total else "encoding every layer"
    grid_flight = store().flight(_grid_key(enc, queries, local, mech, params))
    if grid_flight is None:
        return None
    done, total = grid_flight.progress or (0, 0)
    return f"measuring every layer and head, step {done:,} of {total:,}" if total else "measuring every layer and head"


def is_encoded(enc: Encoding) -> bool:
    """Whether this encoding is in the cache already (encoding it is then instant)."""
    held = store().peek(("capture", enc.at(EVERY)))
    return ("encoding", enc) in store() or (held is not None and enc.layer in held.layers)


def qkv(run: Run) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of the run's head, [1, n, head_dim] each, the queries rescaled by the run's remedy."""
    q, k, v = run.doc.head(run.head)
    return _remedied(run, q), k, v


def remedied_doc(run: Run) -> explorer.Doc:
    """The run's document with every head's queries rescaled by the run's remedy."""
    return replace(run.doc, q=_remedied(run, run.doc.q)) if run.remedy else run.doc


def _remedied(run: Run, q: torch.Tensor) -> torch.Tensor:
    """The one place a run's remedy (explorer.analysis.remedies) rescales queries."""
    return remedies.apply(q, run.remedy, run.doc.causal) if run.remedy else q


def dense_key(run: Run, grid: int) -> tuple:
    """The cache key of exact attention's statistics on the run's encoding and head."""
    return ("dense", run.reference(), grid)


def dense_pass(run: Run, grid: int) -> AttentionStats:
    """Exact attention's statistics of every row, as the model computes it (doc.model_rule),
    PREVIEW_ROWS evenly spaced ones first (explorer.core.rows.preview_first); what it has so far,
    in text order, is offered to the store about every SNAPSHOT_S (ui.refine draws it).
    The binned pass, not explorer.core.fused: on the CPU the fused one measured slower (its module says why)."""
    q, k, v = qkv(run)
    order = preview_first(run.doc.n, PREVIEW_ROWS)
    shared, shown = store(), None
    rule = run.doc.model_rule.of_head(run.head)  # attention as the model computes it
    for done, acc in stream_stats(q, k, v, grid=grid, rows=order, rule=rule):
        due = done >= min(PREVIEW_ROWS, run.doc.n) and (shown is None or time.perf_counter() - shown >= SNAPSHOT_S)
        shared.report(done, order.numel(), partial=by_position(acc.result()) if due else None)
        shown = time.perf_counter() if due else shown
    return by_position(acc.result())


def dense(run: Run, grid: int) -> AttentionStats:
    """The streamed statistics pass of exact attention on the run's head (waits for the whole of it)."""
    return cached(dense_key(run, grid), lambda: dense_pass(run, grid), label="Dense attention, queries")


def result(run: Run) -> Result:
    """The run's mechanism on its head; its parameters were checked by the form (ValueError if not).
    WINDOWS stands for the model's own windows: the attention each forward pass computed."""
    if run.mech == WINDOWS:
        return own_windows(run)
    mech = REGISTRY[run.mech]

    def make():
        q, k, v = qkv(run)
        return mech.run(q, k, v, **mechanism_params(run))

    return cached(("result", run), make, label=f"Running {mech.title}")


def mechanism_params(run: Run) -> dict:
    """The run's parameters as its mechanism takes them on the run's head: TENSOR_PARAMS as tensors."""
    params = REGISTRY[run.mech].for_head(run.params, run.head, run.doc.heads)
    for name in TENSOR_PARAMS.get(run.mech, ()):
        if params.get(name) is not None:
            params[name] = torch.tensor(params[name], dtype=torch.float32)
    return params


def own_windows(run: Run) -> Result:
    """The attention each of the model's passes computed, from that pass's own q/k/v (analysis.windows):
    the text is encoded once more, keeping every pass whole."""
    enc = run.encoding

    def make():
        kept = explorer.encode(enc.text, model(enc.model), layer=enc.layer, window=enc.window or None,
                               keep_windows=True, progress=report)
        return windows.own_windows(kept, run.head)

    return cached(("own windows", run.doc_key, run.head), make, label="Keeping every model window whole, windows")


def weights_fn(run: Run) -> Callable[[torch.Tensor], torch.Tensor]:
    """rows -> [1, len(rows), n]: exact attention's rows as the model computes them, or the run's
    effective weights (its cached result), through the experiment runner's one switch."""
    curve = experiment.DENSE if run.dense else result(run)
    return experiment.attend(*qkv(run), curve, rule=run.doc.model_rule.of_head(run.head)).weights


def fidelity_of(run: Run) -> Fidelity:
    """The run's mechanism against exact attention, on up to FIDELITY_ROWS queries."""
    def make():
        q, k, v = qkv(run)
        return fidelity(q, k, v, result(run), causal=run.doc.causal, max_rows=FIDELITY_ROWS)

    return cached(("fidelity", run), make, label="Measuring fidelity against dense")


def window_map(run: Run, window: tuple[int, int, int, int], grid: int) -> PooledMap:
    """Pooled map of a (query, key) window; dense's whole-text map is the statistics pass's own."""
    n = run.doc.n
    if run.dense and window == (0, n, 0, n):
        return dense(run, grid).map

    def make():
        q0, q1, k0, k1 = window
        return pooled_map(weights_fn(run), 1, n, rows=(q0, q1), cols=(k0, k1), grid=grid,
                          per_bin=MAP_ROWS_PER_BIN, device=run.doc.q.device, progress=report)

    return cached(("map", run, window, grid), make, label="Pooling the attention map, queries")


def query_row(run: Run, query: int) -> torch.Tensor:
    """One query's attention row over the whole text [n]."""
    rows = torch.tensor([query], device=run.doc.q.device)
    return cached(("row", run, query), lambda: weights_fn(run)(rows)[0, 0].cpu())


def selection_row(run: Run, rows: tuple[int, ...]) -> torch.Tensor:
    """Several queries' attention rows summed [n] (the inspector's selection): one row pass each."""
    def make():
        picked = torch.tensor(rows, device=run.doc.q.device)
        return summed_rows(weights_fn(run), picked)[0].cpu()

    return cached(("selection", run, rows), make, label="Reading the selected tokens' attention")


def key_column(run: Run, key: int, grid: int) -> torch.Tensor:
    """Who attends to one key [n]: its column of exact attention as the model computes it, from the
    dense pass's log-sum-exp of every query (so it waits for that pass), one pass over the queries."""
    def make():
        q, k, _ = qkv(run)
        return run.doc.model_rule.of_head(run.head).column(q, k, key, dense(run, grid).lse)[0].cpu()

    return cached(("column", run.reference(), key, grid), make)


def boundaries(run: Run, mode: str, length: int, split: bool) -> tuple[list[int], int]:
    """Segment starts from the text's own structure, and how many units it gave before splitting."""
    def make():
        doc = run.doc
        found = segments.by_mode(mode, doc.n, length, doc.text, doc.offsets, split=False)
        starts = segments.split_long(found, doc.n, length) if split else found
        return starts.tolist(), found.numel()

    return cached(("boundaries", run.doc_key, mode, length, split), make)
