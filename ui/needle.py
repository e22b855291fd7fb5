"""The Needle page's sections: a fact planted in the sidebar's text and asked back (the setup), the
answer's probability against where the fact sits (dense and each mechanism), the retrieval heads
(a click opens one on the Dense attention page), and the answer with heads switched off.

Every forward pass is one cached computation (`probe_at`: one position, one mechanism, one set of
heads off), so a second visit costs nothing, adding a mechanism computes only it, and a Stop keeps
the passes made. Settings belong to views/needle.py (keys "needle_..."), declared before drawing.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import pandas as pd
import streamlit as st

from explorer.analysis import needle_probe as npb
from explorer.analysis.in_model import causal_form
from explorer.analysis.needle_probe import NeedleProbe
from explorer.core.bundled import short_name
from explorer.figures import model_view as grid_figs
from explorer.figures import needle as figs
from explorer.mechanisms import DENSE, REGISTRY
from ui import charts, forms, hosting, inspector, share
from ui.cache import computation, report
from ui.messages import plain
from ui.settings import Setting
from ui.state import Encoding
from ui.texts import TextStore

CHOICES = tuple(k for k in REGISTRY if k != DENSE and causal_form(k))
FACT = Setting("needle_fact", npb.FACT, max_chars=400)
QUESTION = Setting("needle_question", npb.QUESTION, max_chars=400)
ANSWER = Setting("needle_answer", npb.ANSWER, max_chars=100)
POINTS = Setting("needle_points", 5, lo=2, hi=21)
TOKENS = Setting("needle_tokens", 1500, lo=64, hi=8192)
MECHS = Setting("needle_mechs", ["sinks"], choices=CHOICES)
DRAWS = Setting("needle_draws", npb.DRAWS, lo=1, hi=10)
ABLATE_AT = Setting("needle_ablate_at", "best", choices=("best", "all"))
SETTINGS = (FACT, QUESTION, ANSWER, POINTS, TOKENS, MECHS, DRAWS, ABLATE_AT)
STOPPED = "_needle_stopped"  # session key: the passes a Stop ended, until Continue (ui.state lists it)
DENSE_PAGE = "views/overview.py"
TOP = 10  # heads listed


class Setup(NamedTuple):
    """What a probe plants and asks (the page's fields); a tuple, so a plain part of cache keys."""

    fact: str
    question: str
    answer: str
    max_tokens: int


class Job(NamedTuple):
    """One forward pass: the fact at one position, one mechanism (DENSE: the model's own), heads off."""

    hay: Encoding
    setup: Setup
    position: float
    mechanism: str
    params: tuple
    off: tuple = ()


def _label(job: Job) -> str:
    who = "" if job.mechanism == DENSE else f", {REGISTRY[job.mechanism].title}"
    return f"The fact at {job.position:.0%}{who}{', heads off' if job.off else ''}: layers"


@computation(_label)
def probe_at(job: Job) -> NeedleProbe:
    mechanism = None if job.mechanism == DENSE else job.mechanism
    return npb.needle_probe(job.hay.text, *job.setup[:3], positions=(job.position,), model=job.hay.model,
                            mechanism=mechanism, params=dict(job.params) or None, ablate=job.off or None,
                            max_tokens=job.setup.max_tokens, progress=report)


def header() -> None:
    st.title("Needle")
    st.caption("Does the model still find a fact in a long text, and which of its heads find it? A fact is planted "
               "in the sidebar's text at several places, a question about it follows the text, and the model reads "
               "the answer after it: its probability, teacher-forced, shows where the fact gets lost (Liu et al., "
               "Lost in the Middle, 2024); the heads that copy the answer from the fact are its retrieval heads "
               "(Wu et al., ICLR 2025), and switching them off shows whether the finding depends on them.")


def setup() -> tuple[Setup, np.ndarray, dict[str, dict]]:
    """The fact, question and answer, positions, tokens and mechanisms, as the page's fields hold them."""
    a, b = st.columns([3, 2])
    fact = a.text_input("Fact planted in the text", key=FACT.key, max_chars=FACT.max_chars)
    answer = b.text_input("Answer (as it continues the question: mind its leading space)", key=ANSWER.key,
                          max_chars=ANSWER.max_chars)
    question = st.text_area("Question after the text (end it where the answer begins)", key=QUESTION.key,
                            max_chars=QUESTION.max_chars, height=70)
    c, d, e = st.columns([1, 1, 3])
    points = int(c.number_input("Positions", int(POINTS.lo), int(POINTS.hi), key=POINTS.key,
                                help="evenly spaced from the text's start (0%) to just before the question (100%)"))
    cap = min(int(TOKENS.hi), hosting.max_tokens() or int(TOKENS.hi))  # a hosted demo's cap holds here too
    st.session_state[TOKENS.key] = min(int(st.session_state[TOKENS.key]), cap)
    tokens = int(d.number_input("Tokens in the prompt", int(TOKENS.lo), cap, key=TOKENS.key, step=256,
                                help="the text is cut so that the whole prompt, question and answer in, fits"))
    picked = e.multiselect("Mechanisms swapped into every layer, beside the model's own attention", CHOICES,
                           key=MECHS.key, format_func=lambda k: REGISTRY[k].title,
                           help="each runs in its causal form in place of every layer's attention, as on the "
                                "Inside the model page; one forward pass per position")
    params = {key: {**given, "causal": True} for key, given in forms.forms_of(picked, without=("causal",)).items()}
    return Setup(fact, question, answer, tokens), np.linspace(0, 1, points), params


def jobs(enc: Encoding, how: Setup, positions, mechanism: str, params: dict, off: tuple = ()) -> list[Job]:
    return [Job(enc.text_and_model(), how, round(float(p), 4), mechanism, tuple(sorted(params.items())), off)
            for p in positions]


def _stop(asked: tuple) -> None:
    st.session_state[STOPPED] = hash(asked)


def gather(asked: list[Job], key: str, make: bool = True) -> list[NeedleProbe | None]:
    """Each job's probe: those made at once; the others (when `make`) made in turn under a bar that says
    passes done, their rate and the time left, beside Stop. After a Stop, the made ones only (None for
    the rest) and a button to go on; the passes made stay cached."""
    todo = [job for job in asked if not probe_at.made(job)] if make else []
    if todo and st.session_state.get(STOPPED) == hash(tuple(asked)):
        info, button = st.columns([5, 1], vertical_alignment="center")
        info.info(f"Stopped: {len(asked) - len(todo)} of {len(asked)} forward passes made; what they show is below.")
        if button.button("Continue", key=f"{key}_continue"):
            st.session_state.pop(STOPPED, None)
            st.rerun()
    elif todo:
        place = st.empty()
        with place.container():
            line, button = st.columns([5, 1], vertical_alignment="center")
            bar = line.progress(0.0, text=f"{len(todo)} forward passes to make…")
            button.button("Stop", key=f"{key}_stop", on_click=_stop, args=(tuple(asked),),
                          help="End here: the passes made are kept, and Continue makes the rest")
        start = time.perf_counter()
        try:
            for i, job in enumerate(todo):
                if i:
                    took = time.perf_counter() - start
                    bar.progress(i / len(todo), text=f"{i} of {len(todo)} forward passes · {60 * i / took:.1f} "
                                                     f"per minute · about {took / i * (len(todo) - i):.0f} s left")
                probe_at(job)
        finally:
            place.empty()
    return [probe_at(job) if probe_at.made(job) else None for job in asked]


def merged(probes: list[NeedleProbe | None]) -> NeedleProbe | None:
    made = [p for p in probes if p is not None]
    return NeedleProbe.merge(*made) if made else None


def probes(enc: Encoding, how: Setup, positions, params: dict[str, dict]) -> dict[str, NeedleProbe]:
    """Dense's probe and each mechanism's, over every position (those made, after a Stop)."""
    names = [DENSE, *params]
    asked = {name: jobs(enc, how, positions, name, params.get(name, {})) for name in names}
    made = gather([job for name in names for job in asked[name]], "needle_probe")
    out, at = {}, 0
    for name in names:
        probe = merged(made[at: at + len(asked[name])])
        at += len(asked[name])
        if probe is not None:
            out[name] = probe
    return out


# ---------------------------------------------------------------- lost in the middle

def curve(found: dict[str, NeedleProbe]) -> None:
    dense = found[DENSE]
    charts.section("Where the fact gets lost",
                   "The probability the model gives the whole answer (the product of its tokens' probabilities, each "
                   "given everything before it) with the fact at each place in the text. Liu et al. found answers "
                   "falling when the fact sits in the middle; a mechanism whose window cannot reach the fact loses it "
                   "(its dotted line: the fact lies inside the window to the right of it).")
    charts.show(st, figs.position_chart(found), key="needle_positions")
    st.caption(f"{plain(short_name(dense.model))}, {dense.tokens.max():,} tokens per prompt: {dense.note()}. Hover "
               "a point for the fact's first token and the rank of the answer's first token (1: the model's first "
               "choice).")
    frame = pd.concat([p.frame().assign(mechanism=REGISTRY[k].title if k != DENSE else "Dense (the model's own)")
                       for k, p in found.items()])
    st.download_button("The curve's data (CSV)", lambda: frame.to_csv(index=False), "needle-positions.csv", "text/csv",
                       on_click="ignore", key="needle_csv_positions")


# ---------------------------------------------------------------- retrieval heads

def open_head(probe: NeedleProbe, layer: int, head: int) -> None:
    """The Dense attention page on the prompt where this head retrieves best, in its layer and head, the
    answer's first token as the query and the fact's tokens selected."""
    i = int(np.lexsort((probe.answer_prob, probe.retrieval[:, layer, head]))[-1])
    prompt = probe.prompts[i]
    share.load({"text": TextStore.from_env().put(prompt.text), "model": probe.model, "layer": layer, "head": head,
                "window": 0, "auto_head": False, "run": True,
                **{s.key: s.default for s in inspector.ON_TEXT},  # a new text: the last one's zoom does not follow
                "query": prompt.answer[0], inspector.SELECTION.key: inspector.format_ranges([prompt.fact])})
    st.switch_page(DENSE_PAGE)


def retrieval(probe: NeedleProbe) -> None:
    """The layer x head grid of retrieval scores (mean over positions) and the top heads; a click opens one."""
    charts.section("Retrieval heads",
                   "Per head, Wu et al.'s retrieval score with the model's own attention: of the answer's tokens, the "
                   "share whose predicting query attends most to that same token inside the fact (a copy from "
                   "context), the mean over the fact's positions. Click a head, in the grid or the list, to open it "
                   "on the Dense attention page at the answer's first token, with the fact's tokens selected.")
    heads = probe.heads()
    left, right = st.columns([3, 2])
    with left:
        event = charts.show(st, grid_figs.head_grid(heads, ["retrieval"], per_row=1, square=22), key="needle_grid",
                            on_select="rerun", selection_mode="points")
    chosen = grid_figs.picked(event)
    top = heads.sort_values(["retrieval", "fact_mass"], ascending=False, kind="stable").head(TOP).reset_index(drop=True)
    passing = int((heads.retrieval > npb.RETRIEVAL_PASS).sum())
    with right:
        st.markdown(f"**Top {TOP} retrieval heads** ({passing} of {len(heads)} score above {npb.RETRIEVAL_PASS:g})")
        table = st.dataframe(top, key="needle_top", on_select="rerun", selection_mode="single-row", hide_index=True,
                             column_config={"layer": "layer", "head": "head",
                                            "retrieval": st.column_config.NumberColumn("retrieval score",
                                                                                       format="%.2f"),
                                            "fact_mass": st.column_config.NumberColumn("mass on the fact",
                                                                                       format="%.3f")})
        st.download_button("Every head (CSV)", lambda: heads.to_csv(index=False), "retrieval-heads.csv", "text/csv",
                           on_click="ignore", key="needle_csv_heads")
    rows = table.selection.rows if table is not None else []
    if rows:
        chosen = (int(top.layer[rows[0]]), int(top["head"][rows[0]]))
    if chosen:
        open_head(probe, *chosen)


# ---------------------------------------------------------------- switching heads off

def ablation(enc: Encoding, how: Setup, probe: NeedleProbe) -> None:
    """The answer with the top k retrieval heads off against k random heads, on request (many passes)."""
    charts.section("Switching heads off",
                   "The answer's probability with the top k retrieval heads switched off (their outputs zeroed), "
                   "against k heads drawn at random from the others, several draws each (Wu et al.: switching off the "
                   "retrieval heads breaks retrieval, as many random heads do not).")
    a, b, c = st.columns([1, 2, 2], vertical_alignment="bottom")
    draws = int(a.number_input("Random draws per k", int(DRAWS.lo), int(DRAWS.hi), key=DRAWS.key))
    where = b.radio("At", ABLATE_AT.choices, key=ABLATE_AT.key, horizontal=True,
                    format_func={"best": "the position where the model finds it best",
                                 "all": "every position (mean)"}.get)
    positions = probe.positions if where == "all" else probe.positions[[int(np.argmax(probe.answer_prob))]]
    try:
        sets = npb.ablations(probe, draws=draws)
    except ValueError as err:
        st.info(plain(f"{err}: this model has too few heads to compare."))
        return
    asked = [job for s in sets for job in jobs(enc, how, positions, DENSE, {}, s.off)]
    if c.button(f"Switch heads off ({len(asked)} forward passes)", key="needle_ablate"):
        st.session_state.pop(STOPPED, None)
        made = gather(asked, "needle_ablation")
    else:
        made = gather(asked, "needle_ablation", make=False)
    if all(m is None for m in made):
        st.caption("Each set of heads switched off is one forward pass per position: press the button to make them.")
        return
    per = len(positions)
    done = [(s, merged(made[i * per: (i + 1) * per])) for i, s in enumerate(sets)]
    done = [(s, p) for s, p in done if p is not None and len(p.positions) == per]
    if not done:
        return
    frame = npb.ablation_frame(*map(list, zip(*done)))
    intact = float(probe.answer_prob[np.isin(probe.positions, positions)].mean())
    charts.show(st, figs.ablation_chart(frame, intact), key="needle_ablation")
    at = ", ".join(f"{p:.0%}" for p in positions)
    st.caption(f"The fact at {at}; random heads drawn from the {len(probe.heads()) - max(npb.KS)} heads outside the "
               f"top {max(npb.KS)}, {draws} draws per k (the band spans them).")
    st.download_button("The ablation's data (CSV)", lambda: frame.to_csv(index=False), "needle-ablation.csv",
                       "text/csv", on_click="ignore", key="needle_csv_ablation")


# ---------------------------------------------------------------- the model view's column

def retrieval_of(enc: Encoding | None) -> pd.DataFrame | None:
    """layer, head, retrieval (mean over positions) of the probe the Needle page's settings make on this
    text and model with the model's own attention, once every one of its passes is made; else None."""
    if enc is None or enc.synthetic:
        return None
    how = Setup(*(st.session_state.get(s.key, s.default) for s in (FACT, QUESTION, ANSWER)),
                int(st.session_state.get(TOKENS.key, TOKENS.default)))
    asked = jobs(enc, how, np.linspace(0, 1, int(st.session_state.get(POINTS.key, POINTS.default))), DENSE, {})
    if not all(probe_at.made(job) for job in asked):
        return None
    return merged([probe_at(job) for job in asked]).heads()[["layer", "head", "retrieval"]]
