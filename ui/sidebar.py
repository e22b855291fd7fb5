"""The shared sidebar: which text, which model and layer, which head; the Run button."""
from __future__ import annotations

import contextlib
import functools
import os
import threading

import streamlit as st

from explorer.analysis import windows
from explorer.core.bundled import BUNDLED, describe, short_name
from explorer.core.device import MemoryNeeded, pick_device
from explorer.core.encoding import tokens_that_fit
from explorer.core.samples import sample_names
from ui import compute, document, hosting, inspector, maps, messages, settings, share
from ui.messages import LOG, plain
from ui.settings import Setting
from ui.state import SOURCES, Encoding, Run
from ui.texts import TextStore

MAX_UPLOAD_BYTES = 20 * 2**20  # as .streamlit/config.toml's server.maxUploadSize
MAX_CHARS = 4_000_000  # a pasted text (the Python reference is under 500,000)
SOURCE = Setting("source", SOURCES[0], choices=SOURCES)
DEFAULT_SAMPLE = "A Field Guide to Reading Long Documents"  # 22,000 tokens: long, and quick to encode
SAMPLE = Setting("sample", DEFAULT_SAMPLE, choices=tuple(sample_names()))
PASTED = Setting("pasted", "", url=False, max_chars=MAX_CHARS)
TEXT = Setting("text", "", max_chars=32)  # the key of a pasted or uploaded text in the text store (ui.texts)
MODEL = Setting("model", "minilm", max_chars=200, rule=hosting.check_model)
DOWNLOAD = Setting("allow_download", False, url=False)
LAYER = Setting("layer", 0, lo=0, hi=95, bounds="from 0 to the model's last layer")  # checked on Run for the model
WINDOW = Setting("window", 0, lo=0, hi=32768)
HEAD = Setting("head", 0, lo=0, hi=1023, bounds="from 0 to the layer's last head")
SYNTH_N = Setting("synth_n", 2048, lo=1, hi=200_000)
SYNTH_NEEDLES = Setting("synth_needles", 4, lo=0, hi=64)
SYNTH_MARGIN = Setting("synth_margin", 8.0, lo=0.0, hi=40.0)
SYNTH_SEED = Setting("synth_seed", 0, lo=0, hi=2**31 - 1)
AUTO_HEAD = Setting("auto_head", True)  # open on a telling layer and head: content over window positions, or a sink
SIDEBAR = (SOURCE, SAMPLE, PASTED, TEXT, MODEL, DOWNLOAD, LAYER, WINDOW, HEAD, SYNTH_N, SYNTH_NEEDLES,
           SYNTH_MARGIN, SYNTH_SEED, AUTO_HEAD)
PICK = "_pick"  # session key: (layer, head) to show, chosen on the last run, set before the widgets exist
settings.register(*SIDEBAR)
TRIM = "_trim_to"  # session key: the visitor chose to encode only the first tokens of a long text
OTHER_MODEL = "model_other"  # session key: the model name being typed; it becomes MODEL when entered
OTHER_LABEL = "Another model: a Hugging Face id or a local folder"
WARM_ENV = "EXPLORER_WARM"  # "0": no first-visit warm-up (the tests' in-process AppTests, which never show it)
_warm_lock = threading.Lock()
_warm_started = False


def _reopen_shared_text() -> None:
    """A link's text key (setting "text") becomes the pasted text, before its widget exists."""
    key = st.session_state.get(TEXT.key)
    if not key or st.session_state.get("_reopened") == key:
        return
    st.session_state["_reopened"] = key
    text = TextStore.from_env().get(key)
    if text is None:
        settings.refuse(TEXT.key, "the shared text is no longer stored here; paste it again")
        st.session_state[TEXT.key] = ""
        return
    st.session_state[SOURCE.key], st.session_state[PASTED.key] = "Paste", text


def _text() -> str:
    """The text the chosen source holds now ('' when there is none)."""
    source = st.session_state[SOURCE.key]
    if source == "Sample":
        return compute.sample(st.selectbox("Sample text", SAMPLE.choices, key=SAMPLE.key))
    if source == "Paste":
        return st.text_area("Paste a text", key=PASTED.key, height=160, max_chars=MAX_CHARS,
                            placeholder="Paste a long document here…")
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


def _synthetic_spec() -> dict:
    n = st.number_input("Tokens", int(SYNTH_N.lo), int(SYNTH_N.hi), key=SYNTH_N.key, step=256)
    needles = st.number_input("Planted needles", int(SYNTH_NEEDLES.lo), int(SYNTH_NEEDLES.hi), key=SYNTH_NEEDLES.key)
    margin = st.number_input("Needle logit margin", SYNTH_MARGIN.lo, SYNTH_MARGIN.hi, key=SYNTH_MARGIN.key, step=0.5)
    seed = st.number_input("Seed", int(SYNTH_SEED.lo), int(SYNTH_SEED.hi), key=SYNTH_SEED.key)
    spec = {"n": int(n), "heads": 4, "head_dim": 32, "seed": int(seed),
            "needles": min(int(needles), int(n) // 2), "margin": float(margin)}
    return spec


def _model_field() -> None:
    if hosting.hosted():
        offered = hosting.models()
        if st.session_state[MODEL.key] not in offered:  # from a link: refused here, nothing is loaded for it
            settings.refuse(MODEL.key, f"this demo offers only {', '.join(offered)}")
            st.session_state[MODEL.key] = offered[0]
        st.selectbox("Model", offered, key=MODEL.key, format_func=short_name)
        st.caption(describe(st.session_state[MODEL.key]))
        return
    name = st.session_state[MODEL.key]
    st.selectbox("Model", list(BUNDLED) + ([name] if name not in BUNDLED else []), key=MODEL.key,
                 format_func=short_name, help="the bundled models load offline; below, any other")
    if name in BUNDLED:
        st.caption(describe(name))
    st.text_input(OTHER_LABEL, key=OTHER_MODEL, max_chars=MODEL.max_chars,
                  on_change=_other_model, placeholder="Qwen/Qwen2.5-0.5B or /path/to/model",
                  help="a model already in your Hugging Face cache, a local folder (config.json or one .gguf file), "
                       "or, with downloads allowed, any model on the Hub whose architecture transformers ships")
    st.checkbox("Allow downloading models from the Hugging Face Hub", key=DOWNLOAD.key,
                help="off: only the bundled models, local folders and models already in your cache load")


def _other_model() -> None:
    typed = st.session_state[OTHER_MODEL].strip()
    if typed:
        st.session_state[MODEL.key] = typed


def _chosen_by_hand() -> None:
    st.session_state[AUTO_HEAD.key] = False


def _model_choice() -> tuple[str, int, int]:
    """(model, layer, window) as the fields say; the text joins them when Run is pressed."""
    _model_field()
    st.number_input("Layer", int(LAYER.lo), int(LAYER.hi), key=LAYER.key, on_change=_chosen_by_hand)
    st.checkbox("Open on a telling layer and head", key=AUTO_HEAD.key,
                help="a causal LM opens where its attention sinks form; an encoder over a text longer than its "
                     "window opens where content, not the restarting window positions, shapes the whole-text map")
    st.number_input("Window (tokens per model pass, 0 = model maximum)", int(WINDOW.lo), int(WINDOW.hi),
                    key=WINDOW.key, step=64)
    return (st.session_state[MODEL.key].strip(), int(st.session_state[LAYER.key]),
            int(st.session_state[WINDOW.key]))


def _within_cap(enc: Encoding, trim: int | None) -> Encoding | None:
    """What to encode: the text as it is, or its first tokens when the visitor chose so (trim: for a
    text over a hosted demo's cap, or over the memory); None (after saying so) while a choice is due."""
    if enc.synthetic:
        return enc
    if trim:
        return compute.first_tokens(enc, trim)
    cap = hosting.max_tokens()
    if cap is None:
        return enc
    count = compute.token_count(enc)
    if count <= cap:
        return enc
    st.warning(f"This text has {count:,} tokens for {plain(enc.model)}; this demo encodes at most {cap:,}.")
    _offer_first_tokens(cap)
    return None


def _offer_first_tokens(count: int) -> None:
    st.button(f"Use the first {count:,} tokens", on_click=lambda: st.session_state.update({TRIM: count}),
              key="use_first_tokens")


def _view_follows(previous: Encoding | None, enc: Encoding, linked: bool) -> None:
    """The view settings that are relative to a text (the zoom window, the query token) start over
    on another text or model, so a new text opens whole; unless a link named them for this one."""
    if linked or previous is None or previous.at(0) == enc.at(0):
        return
    for s in inspector.ON_TEXT:
        st.session_state[s.key] = s.default


def _run(enc: Encoding, trim: int | None = None, linked: bool = False) -> None:
    with st.status("Encoding…", expanded=True) as status:
        try:
            lm = None if enc.synthetic else _model(enc.model)
        except ValueError as err:
            _failed(status, err, then=_model_fields())
            return
        try:
            capped = _within_cap(enc if lm is None else _layer_in_range(enc, lm.layers), trim)
            if capped is None:
                status.update(label="Too long for this demo", state="error", expanded=True)
                return
            auto = bool(st.session_state.get(AUTO_HEAD.key))
            content = auto and _picks_head(capped) and (compute.heads_known(capped) or _every_layer_fits(capped))
            pick = _opening(capped, lm, content) if auto else None
            if pick is not None:  # the layer shown is the one picked: that one is encoded, no other
                capped = capped.at(pick[0])
            reused = compute.is_encoded(capped)
            doc = compute.encoded(capped)
        except MemoryNeeded as err:
            _failed(status, err)
            fits = 0 if lm is None or hosting.hosted() else tokens_that_fit(lm)
            if fits >= 2:
                _offer_first_tokens(fits)
            return
        except ValueError as err:
            _failed(status, err)
            return
        if doc.unknown_note():
            st.warning(doc.unknown_note())
        _view_follows(document.encoding(), capped, linked)
        st.session_state[document.ENCODED] = capped
        st.session_state.pop(document.NOT_ENCODED, None)
        _keep_text(capped)
        took = sum(doc.timings.values())
        status.update(label=f"{doc.n:,} tokens, encoded earlier (kept in the cache)" if reused else
                      f"Encoded {doc.n:,} tokens in {took:.2f} s", state="complete", expanded=False)
    if pick is not None and pick != (int(st.session_state[LAYER.key]), int(st.session_state[HEAD.key])):
        st.session_state[PICK] = pick
    if PICK in st.session_state:  # a layer kept by _layer_in_range: its field shows it from the next run
        st.rerun()


def _model(name: str):
    hosting.check_model(name)
    return compute.model(name, bool(st.session_state.get(DOWNLOAD.key)))


def _model_fields() -> str:
    """Where the visitor picks another model: the library's message cannot name the fields."""
    return "Pick one under “Model”" + ("." if hosting.hosted() else f", or type another under “{OTHER_LABEL}”.")


def _failed(status, err: ValueError, then: str = "") -> None:
    status.update(label="Could not encode", state="error", expanded=True)
    messages.error(err, then)
    st.session_state[document.NOT_ENCODED] = "the last Run could not encode its text"


def _layer_in_range(enc: Encoding, layers: int) -> Encoding:
    """The layer field's bounds fit every model: a layer this one lacks (typed, or from a link) is
    refused with this model's bounds, and the previous layer kept (or 0 when it does not fit either)."""
    if enc.layer < layers:
        return enc
    settings.refuse(LAYER.key, f"layer {enc.layer} is out of range for this model's {layers} layers (0-{layers - 1})")
    previous = document.encoding()
    kept = previous.layer if previous is not None and not previous.synthetic and previous.layer < layers else 0
    st.session_state[PICK] = (kept, int(st.session_state[HEAD.key]))
    return enc.at(kept)


def _every_layer_fits(enc: Encoding) -> bool:
    """Capture every layer at once, which picking a head needs (the layer shown is then taken from it);
    False, saying so, when that would not fit the memory: the chosen layer is then encoded alone."""
    try:
        compute.capture(enc)
    except MemoryNeeded as err:
        st.caption(f"No layer and head picked: {plain(str(err))}. Encoding layer {enc.layer} alone.")
        return False
    return True


def _picks_head(enc: Encoding) -> bool:
    """Whether a head is picked for this text: longer than one window of a model with absolute positions."""
    if enc.synthetic:
        return False
    lm = compute.model(enc.model)
    return lm.local_positions and compute.token_count(enc) > (enc.window or lm.max_tokens)


def _opening(enc: Encoding, lm, content: bool) -> tuple[int, int] | None:
    """The layer and head a run opens on when the choice is left to the app: with `content` (positions
    restart in every window of a long text, and every layer could be measured), where content rather than
    window position shapes the map (analysis.windows.default_layer_head); else, for a causal LM, where its
    attention sinks form (compute.sink_opening). None: as the fields say."""
    if content:
        with contextlib.suppress(ValueError):  # about one window long: no far keys to judge heads by
            return windows.default_layer_head(compute.content_heads(enc))[:2]
    if lm is not None and lm.causal:
        return compute.sink_opening(enc)[:2]
    return None


def warm_first_visit() -> None:
    """Start, once per process, making what every first visit shows (the default sample's dense page:
    its encoding, head choice, dense pass and head summary) on a thread of its own, into the shared
    cache: a visitor finds it made, or waits for that one making, and none pays for it again.
    app.py calls it on the first session; deploy/serve.py as the server starts."""
    global _warm_started
    with _warm_lock:
        if _warm_started or os.environ.get(WARM_ENV, "1") == "0":
            return
        _warm_started = True
    threading.Thread(target=_first_visit_values, name="first visit warm-up", daemon=True).start()


def opening_encoding() -> Encoding:
    """What a plain first visit encodes: the default sample with the first model offered, at the
    default layer and window (the layer and head it opens on are then picked as _run picks them)."""
    return _sample_encoding(hosting.models()[0] if hosting.hosted() else MODEL.default)


@functools.lru_cache(maxsize=4)
def _sample_encoding(model: str) -> Encoding:
    """The default sample's Encoding: its text hashed once per process and model."""
    return Encoding.of_text(compute.sample(DEFAULT_SAMPLE), model, LAYER.default, WINDOW.default)


def _first_visit_values() -> None:
    """The values a first visit asks for, made as _run and the dense page would make them (same keys),
    the first picture's first: the head choice (saved on disk once made: ui.saved), the layer it opens
    on, the dense pass, then the head summary. Nothing else: what it computes
    while the first visitor's page draws slows that page on a small machine."""
    try:
        enc = opening_encoding()
        lm = compute.model(enc.model)
        pick = _opening(enc, lm, _picks_head(enc)) if AUTO_HEAD.default else None  # as _run picks
        layer, head = pick or (LAYER.default, HEAD.default)
        shown = enc.at(layer)
        run = Run(shown, head, doc=compute.encoded(shown))
        compute.dense(run, maps.GRID.default)
        compute.head_stats(run)
    except Exception:  # noqa: BLE001 - a visitor's own run then makes (and reports) what failed here
        LOG.exception("warming the first visit")


def _apply_pick() -> None:
    """A layer and head chosen on the last run (here or on the model view) become the current ones."""
    pick = st.session_state.pop(PICK, None)
    if pick is None:
        return
    layer, head = pick
    st.session_state[LAYER.key], st.session_state[HEAD.key] = layer, head
    enc = document.encoding()
    if enc is not None and not enc.synthetic:
        st.session_state[document.ENCODED] = enc.at(layer)


def _keep_text(enc: Encoding) -> None:
    """A pasted or uploaded text goes into the text store, so a link can reopen it."""
    if st.session_state[SOURCE.key] not in ("Paste", "Upload"):
        st.session_state[TEXT.key] = ""
        return
    try:
        key = TextStore.from_env().put(enc.text, enc.text_key)
        # this session's own text: the link's key, never a text to reopen over what is typed next
        st.session_state[TEXT.key] = st.session_state["_reopened"] = key
    except (ValueError, OSError) as err:
        st.session_state[TEXT.key] = ""
        st.caption(f"A link cannot carry this text: {plain(str(err))}")


def render(owners: set[str]) -> None:
    """Draw the sidebar; encode on Run, on a first visit, or when a shared link asks; keep the head in range.

    The text and Run come first, so both are in view without scrolling; the model settings
    follow in an expander."""
    restoring = not st.session_state.get("_restored")
    auto = share.restore_from_url(owners) or share.take_pending_file(owners) or share.first_visit()
    if restoring and {LAYER.key, HEAD.key} & set(st.query_params) and AUTO_HEAD.key not in st.query_params:
        st.session_state[AUTO_HEAD.key] = False  # a link that names its layer or head is shown as it says
    for s in SIDEBAR:
        st.session_state.setdefault(s.key, s.default)
    _apply_pick()
    _reopen_shared_text()
    settings.keep()
    with st.sidebar:
        st.radio("Text", SOURCES, key=SOURCE.key, horizontal=True)
        synthetic = st.session_state[SOURCE.key] == "Synthetic"
        text = "" if synthetic else _text()
        if not synthetic:
            st.caption(f"{len(text):,} characters")
        pressed = st.button("Run", type="primary", width="stretch")
        running = st.container()  # the run's progress, right under Run where it is seen
        with st.expander("Synthetic vectors" if synthetic else "Model, layer and window",
                         expanded=synthetic):
            spec = _synthetic_spec() if synthetic else None
            choice = None if synthetic else _model_choice()
        trim = st.session_state.pop(TRIM, None)
        if pressed or auto or trim:
            with running:
                if not synthetic and not text.strip():
                    st.warning("The text is empty: pick a sample, paste or upload a text first.")
                    st.session_state[document.NOT_ENCODED] = "the text in the sidebar is empty"
                else:  # the one place a text is hashed: when it is encoded
                    _run(Encoding.of_synthetic(spec) if synthetic else Encoding.of_text(text, *choice), trim,
                         linked=auto)
        run = document.current()
        if run is not None:
            doc = run.doc
            st.session_state[HEAD.key] = run.head
            st.number_input("Head", 0, doc.heads - 1, key=HEAD.key, on_change=_chosen_by_hand)
            st.caption(f"{doc.n:,} tokens · {doc.heads} heads · layer {doc.layer} · {plain(doc.model)}")
        st.caption(f"Device: {pick_device()}" + (" · hosted demo" if hosting.hosted() else ""))
        share.panel(owners)
    share.publish_to_url()
