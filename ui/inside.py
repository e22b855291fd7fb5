"""The page "Inside the model"'s sections: which mechanisms go into which layers, StreamingLLM's table,
the loss each adds along the text, the predictions it hurts most (a click opens the Dense attention
page there), and the mechanism in one layer at a time.

Their settings belong to views/inside.py (keys "inside_..."), which declares SETTINGS before drawing.
The model runs once with its own attention (`baseline`) and once per mechanism and layers (`effect`),
each cached by (text, model, tokens scored, mechanism, parameters, layers): a second visit costs nothing,
and the layer-by-layer curve keeps every layer done when it is stopped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from explorer.analysis import in_model as im
from explorer.core.bundled import BUNDLED
from explorer.core.device import pick_device
from explorer.figures import colours
from explorer.figures import inside as figs
from explorer.mechanisms import DENSE, REGISTRY
from ui import charts, compute, forms, inspector, messages, share, sidebar
from ui.cache import computation, report
from ui.settings import Setting
from ui.state import Encoding

WINDOW_ONLY = "window"  # StreamingLLM's "window" row: sink + window with no sinks, a choice of its own
CHOICES = (WINDOW_ONLY, *(k for k in REGISTRY if k != DENSE))
CAUSAL_LM = "smollm2"  # what an encoder's visitor is offered
ROLLING = 64  # predictions each point of the loss chart averages
HURT_ROWS = 20
MECHS = Setting("inside_mechs", [WINDOW_ONLY, "sinks"], choices=CHOICES)
WINDOW = Setting("inside_window", 256, lo=1, hi=1_000_000)
SOME_LAYERS = Setting("inside_some_layers", False)
LAYER_LIST = Setting("inside_layer_list", "0-14", max_chars=200)
TOKENS = Setting("inside_tokens", 2048 if pick_device().type == "cpu" else BUNDLED[CAUSAL_LM].positions,
                 lo=2, hi=131_072)
HURT_OF = Setting("inside_hurt_of", 0, lo=0, hi=len(CHOICES) - 1)
SETTINGS = (MECHS, WINDOW, SOME_LAYERS, LAYER_LIST, TOKENS, HURT_OF)
SWEEPING = "_inside_sweeping"  # session key: the layer-by-layer curve is being made (ui/state.py lists it)


@dataclass(frozen=True)
class Swap:
    """One mechanism with its parameters, as the model runs it (checked, causal on) and as a table names it."""

    choice: str  # a CHOICES entry
    mechanism: str
    params: tuple  # frozen checked parameters

    @property
    def label(self) -> str:
        return im.label(self.mechanism, dict(self.params))

    @property
    def colour(self) -> str:
        # blue: apart from every mechanism's colour (orange sat too near memory's sand)
        return colours.SERIES[0] if self.choice == WINDOW_ONLY else colours.MECHANISMS[self.mechanism]


@computation("The model with its own attention, layers")
def baseline(enc: Encoding, tokens: int) -> im.Baseline:
    return im.baseline(enc.text, compute.model(enc.model), tokens, progress=report)


@computation(lambda enc, tokens, swap, layers: f"{swap.label} in the model, layers")
def effect(enc: Encoding, tokens: int, swap: Swap, layers: tuple[int, ...]) -> im.InModel:
    return im.swapped(baseline(enc, tokens), swap.mechanism, dict(swap.params), layers, progress=report)


def header() -> None:
    st.title("Inside the model")
    st.caption("Swap a mechanism into the model's own layers, in place of every head's attention, and see what the "
               "model then predicts: the perplexity of the text's next tokens beside the model's own, as in "
               "StreamingLLM's first table, and where along the text the predictions suffer. Each mechanism runs in "
               "its causal form on the queries, keys and values the layer attends with, at the layer's own scale.")


def causal_model(enc: Encoding, purpose: str):
    """The loaded model, or a stop: synthetic vectors get a sentence naming `purpose` (what a causal model's
    text is needed for), an encoder the library's sentence and a button that switches to SmolLM2."""
    if enc.synthetic:
        st.info("Synthetic vectors come from no model: pick a text in the sidebar, with a causal language model such "
                f"as SmolLM2, {purpose}.")
        st.stop()
    try:
        return im.load_causal(compute.model(enc.model))
    except ValueError as err:  # a choice the page cannot serve, not a failure: said as a warning
        st.warning(messages.plain(str(err)))
        if st.button("Switch to SmolLM2", type="primary"):
            share.load({"model": CAUSAL_LM, "run": True, "auto_head": False})
            st.rerun()
        st.stop()


def choose(lm) -> tuple[list[Swap], tuple[int, ...], int]:
    """The mechanisms (each with its form), the layers and the tokens scored; a refused choice is said and
    left out, so the others still run."""
    picked = st.multiselect("Mechanisms to swap in", CHOICES, key=MECHS.key, format_func=_title)
    left, right = st.columns(2)
    tokens = int(left.number_input("Tokens scored (the text's first)", TOKENS.lo, TOKENS.hi, key=TOKENS.key,
                                   help=f"at most the model's {lm.max_tokens:,} positions; about 15 s per pass at "
                                        "2,048 tokens on two CPU cores"))
    layers = _layers(lm, right)
    swaps = []
    for choice in picked:
        with st.expander(f"{_title(choice)}: parameters", expanded=False):
            swap = _form(choice)
        if swap is not None:
            swaps.append(swap)
    return swaps, layers, tokens


def _title(choice: str) -> str:
    return "Window only (StreamingLLM's baseline)" if choice == WINDOW_ONLY else REGISTRY[choice].title


def _form(choice: str) -> Swap | None:
    """The choice's parameter form (causal is not offered: inside a causal model it is always on)."""
    if choice == WINDOW_ONLY:
        window = int(st.number_input("Window w (recent tokens, the query included)", WINDOW.lo, WINDOW.hi,
                                     key=WINDOW.key))
        mechanism, given = "sinks", {"sinks": 0, "window": window}
    else:
        mech = REGISTRY[choice]
        mechanism = choice
        given = forms.param_form(mech, names=tuple(p.name for p in mech.params if p.name != "causal")) \
            if im.causal_form(choice) else {}
    try:
        return Swap(choice, mechanism, tuple(sorted(im.check_mechanism(mechanism, given).items())))
    except ValueError as err:
        messages.error(err)
        return None


def _layers(lm, where) -> tuple[int, ...]:
    some = where.toggle("Only some layers", key=SOME_LAYERS.key)
    if not some:
        return tuple(range(lm.layers))
    text = where.text_input("Layers", key=LAYER_LIST.key, max_chars=LAYER_LIST.max_chars,
                            help=f"numbers and ranges among 0-{lm.layers - 1}, such as 0-14 or 3, 7, 11")
    try:
        return im.parse_layers(text, lm.layers)
    except ValueError as err:
        messages.error(err, "All layers are used until then.")
        return tuple(range(lm.layers))


def scores(enc: Encoding, tokens: int, swaps: list[Swap], layers: tuple[int, ...]) -> list[im.InModel] | None:
    """Every swap's effect: computed on request, shown at once when every one is made already; None
    (after the button) until then. A text the model cannot score gets its message and a stop."""
    enc = enc.text_and_model()
    made = all(effect.made(enc, tokens, s, layers) for s in swaps)
    if not swaps:
        st.info("Pick at least one mechanism to swap in.")
        return None
    if not made and not st.button(f"Swap {'them' if len(swaps) > 1 else 'it'} in and score", type="primary"):
        st.caption(f"Each mechanism costs one pass of the model over the first {tokens:,} tokens, and the model's "
                   "own attention one more.")
        return None
    try:
        return [effect(enc, tokens, s, layers) for s in swaps]
    except ValueError as err:
        messages.error(err)
        st.stop()


def table(effects: list[im.InModel], total_layers: int) -> None:
    charts.section("Perplexity with each mechanism inside the model",
                   "One row per mechanism, in StreamingLLM's form: the perplexity of the text's next tokens (lower "
                   "is better), its ratio to the model's own, how often both predict the same next token, and the "
                   "mean KL divergence of the mechanism's next-token distribution from the model's own. Seconds "
                   "are one pass of the model with the mechanism in place.")
    frame = im.table(effects, total_layers).rename(columns=im.COLUMNS)
    st.dataframe(frame, hide_index=True, column_config={
        im.COLUMNS["perplexity"]: st.column_config.NumberColumn(format="%.2f"),
        im.COLUMNS["times_dense"]: st.column_config.NumberColumn(format="%.2f×"),
        im.COLUMNS["agreement"]: st.column_config.NumberColumn(format="percent"),
        im.COLUMNS["kl_mean"]: st.column_config.NumberColumn(format="%.4f"),
        im.COLUMNS["seconds"]: st.column_config.NumberColumn(format="%.1f")})
    notes = dict.fromkeys(n for e in effects for n in e.notes)
    st.caption(messages.plain(" ".join(notes)))
    st.download_button("Table (CSV)", frame.to_csv(index=False), "inside-the-model.csv", "text/csv")


def along(effects: list[im.InModel], swaps: list[Swap], text: str) -> None:
    charts.section("Where along the text the predictions suffer",
                   f"The loss each mechanism adds to every next token (its negative log-likelihood minus the model's "
                   f"own), averaged over the last {ROLLING} predictions. A line that climbs as the text goes on is "
                   "losing what lies beyond its reach; hover a point for the words it ends at.")
    gaps = {s.label: im.loss_gap(e, ROLLING) for s, e in zip(swaps, effects)}
    fig = figs.loss_along(gaps, text, effects[0].offsets, ROLLING, {s.label: s.colour for s in swaps})
    charts.show(st, fig, key="inside_loss")


def hurt(effects: list[im.InModel], swaps: list[Swap], text: str, prefix: int, layer: int, head: int) -> None:
    """The table of hurt predictions; a clicked row opens its query (a text token, `prefix` special
    tokens after the start of the Doc) on the Dense attention page."""
    charts.section("The predictions a mechanism hurts most",
                   "Where the mechanism's next-token distribution is furthest from the model's own (largest KL). "
                   "Click a row to open the Dense attention page with the token that made the prediction as the "
                   f"query, at layer {layer} and head {head}.")
    which = min(int(st.session_state.get(HURT_OF.key, 0)), len(swaps) - 1)
    st.session_state[HURT_OF.key] = which
    which = st.selectbox("Mechanism", range(len(swaps)), key=HURT_OF.key, format_func=lambda i: swaps[i].label)
    frame = im.hurt(effects[which], text, HURT_ROWS)
    event = st.dataframe(frame, hide_index=True, on_select="rerun", selection_mode="single-row", key="inside_hurt",
                         column_config={
                             "query": st.column_config.NumberColumn("Read up to token", format="%d"),
                             "before": st.column_config.TextColumn("Text before the next token", width="large"),
                             "token": "Next token", "dense": "Model predicts",
                             "p_dense": st.column_config.NumberColumn("its p", format="%.2f"),
                             "mechanism": "With the mechanism",
                             "p_mechanism": st.column_config.NumberColumn("its p", format="%.2f"),
                             "kl": st.column_config.NumberColumn("KL (nats)", format="%.2f"),
                             "added_loss": st.column_config.NumberColumn("Added loss", format="%+.2f")})
    rows = event.selection.rows if event else []
    if rows:
        open_dense_at(prefix + int(frame["query"].iloc[rows[0]]), layer, head)


def open_dense_at(position: int, layer: int, head: int) -> None:
    """The Dense attention page with the Doc's token `position` as the query, at this layer and head."""
    inspector.pick(position)  # the query alone: a selection from another text does not follow it
    st.session_state[sidebar.PICK] = (layer, head)
    st.switch_page("views/overview.py")


def by_layer(enc: Encoding, tokens: int, swaps: list[Swap], lm, dense: float) -> None:
    charts.section("Which layers matter",
                   "Each mechanism in one layer at a time, every other layer the model's own: the perplexity against "
                   "the layer swapped. One pass of the model per layer and mechanism; Stop keeps the layers done.")
    enc = enc.text_and_model()
    todo = [(s, (layer,)) for s in swaps for layer in range(lm.layers) if not effect.made(enc, tokens, s, (layer,))]
    if st.session_state.get(SWEEPING):
        if st.button("Stop"):
            st.session_state[SWEEPING] = False
        else:
            _sweep(enc, tokens, todo)
            st.session_state[SWEEPING] = False
    elif todo and st.button(f"Run each mechanism in one layer at a time ({len(todo)} passes of the model)"):
        st.session_state[SWEEPING] = True
        st.rerun()
    curves = {}
    for s in swaps:
        done = [layer for layer in range(lm.layers) if effect.made(enc, tokens, s, (layer,))]
        if done:
            curves[s.label] = (done, [effect(enc, tokens, s, (layer,)).perplexity for layer in done])
    if curves:
        charts.show(st, figs.by_layer(curves, dense, {s.label: s.colour for s in swaps}), key="inside_layers")


def _sweep(enc: Encoding, tokens: int, todo: list) -> None:
    """The passes still to make, one after the other, with the rows done, the rate and the time left."""
    line = st.empty()
    start = time.perf_counter()
    for i, (swap, layers) in enumerate(todo):
        elapsed = time.perf_counter() - start
        left = f", about {elapsed / i * (len(todo) - i):.0f} s left" if i else ""
        rate = f" ({elapsed / i:.1f} s a pass{left})" if i else ""
        line.caption(f"{i} of {len(todo)} passes done{rate}: now {messages.plain(swap.label)} in layer {layers[0]}")
        effect(enc, tokens, swap, layers)
    line.empty()
