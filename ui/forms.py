"""Forms: a mechanism's parameters as widgets, and the header every mechanism page opens with.

Each parameter widget holds the setting "p.<mechanism>.<param>" (ui.settings), labelled in
words with its unit; its bounds come from the Param, so a form offers only legal values, and
the mechanism's rules between parameters are checked as the form is drawn.
"""
from __future__ import annotations

import streamlit as st

from explorer.core import segments
from explorer.mechanisms import REGISTRY, Mechanism, Param, Result
from ui import compute, document, messages, settings
from ui.state import Run


def _widget(mech: Mechanism, p: Param):
    s = settings.SETTINGS[settings.param_key(mech, p.name)]
    st.session_state.setdefault(s.key, s.default)
    if p.choices is not None or p.offered is not None:
        options = p.choices if p.choices is not None else p.offered
        if st.session_state[s.key] not in options:  # a library-legal value this form does not list
            options = tuple(sorted({*options, st.session_state[s.key]}))
        return st.selectbox(p.title, options, key=s.key, help=p.help, format_func=p.text_of)
    if isinstance(p.default, bool):
        return st.checkbox(p.title, key=s.key, help=p.help)
    if isinstance(p.default, int):
        return int(st.number_input(p.title, min_value=None if p.lo is None else int(p.lo),
                                   max_value=None if p.hi is None else int(min(p.hi, 2**31 - 1)),
                                   step=int(p.step or 1), key=s.key, help=p.help))
    return float(st.number_input(p.title, min_value=p.lo, max_value=p.hi, step=p.step, key=s.key, help=p.help,
                                 format="%.4g"))


def param_form(mech: Mechanism, doc=None, names: tuple[str, ...] | None = None, columns: int = 4) -> dict:
    """Widgets for a mechanism's parameters; returns their values.

    names: draw only these parameters (a page showing what one mode uses).
    doc: a causal model's document starts the mechanism's `causal` switch on.
    """
    if doc is not None and any(p.name == "causal" for p in mech.params):
        st.session_state.setdefault(settings.param_key(mech, "causal"), doc.causal)
    shown = [p for p in mech.params if p.default is not None and (names is None or p.name in names)
             and p.name not in (mech.head_params or ())]
    values, cols = {}, st.columns(columns)
    for i, p in enumerate(shown):
        with cols[i % columns]:
            values[p.name] = _widget(mech, p)
    return values


def forms_of(keys, doc=None, without: tuple[str, ...] = ()) -> dict[str, dict]:
    """Each chosen mechanism's parameter form in an expander of its own (but the parameters `without`),
    checked: key -> its parameters."""
    params = {}
    for key in keys:
        mech = REGISTRY[key]
        with st.expander(f"{mech.title} parameters"):
            names = tuple(p.name for p in mech.params if p.name not in without)
            params[key] = checked(mech, param_form(mech, doc=doc, names=names))
    return params


def checked(mech: Mechanism, params: dict) -> dict:
    """The parameters if the mechanism accepts them together; else its message and a stop."""
    try:
        mech.validate(params)
    except ValueError as err:
        messages.error(err)
        st.stop()
    return params


def structure_params(run: Run, mech: Mechanism, label: str, noun: str, length: str) -> dict:
    """Parameters of a mechanism that cuts the text (segments, chunks): fixed length or the text's
    own sentences or paragraphs, turned into explicit boundaries.

    Its two settings, "<mechanism>_mode" and "<mechanism>_split", belong to the mechanism's page."""
    mode_key, split_key = f"{mech.key}_mode", f"{mech.key}_split"
    settings.declare(settings.Setting(mode_key, segments.MODES[0], choices=segments.MODES),
                     settings.Setting(split_key, True))
    length_title = next(p.title for p in mech.params if p.name == length).lower()
    left, right = st.columns([2, 1])
    mode = left.radio(label, segments.MODES, horizontal=True, key=mode_key)
    split = right.checkbox(f"Split long {noun}", key=split_key, disabled=mode == segments.MODES[0],
                           help=f"cut {noun} longer than the {length_title} set below")
    params = checked(mech, param_form(mech, doc=run.doc))
    if mode == segments.MODES[0]:
        return params
    starts, units = compute.boundaries(run, mode, params[length], split)
    if units == 1:
        unit = mode[:-1]
        st.info(f"This text has no {unit} breaks: it is one {unit}"
                + (f", cut only at the {length_title}." if len(starts) > 1 else ", so this is dense attention."))
    return {**params, "boundaries": starts}


def opening(mech: Mechanism, structure: tuple[str, str, str] | None = None,
            names: tuple[str, ...] | None = None) -> Run:
    """What every mechanism page opens with: the document, title, the mechanism's own summary and
    its parameter form.

    structure: (radio label, noun, length parameter) for mechanisms that cut the text.
    Returns the run handle of the mechanism with the chosen parameters.
    """
    run = document.require()
    st.title(mech.title)
    st.caption(mech.summary)
    if structure:
        params = structure_params(run, mech, *structure)
    else:
        params = checked(mech, param_form(mech, doc=run.doc, names=names))
    return run.of(mech.key, params)


def header(mech: Mechanism, structure: tuple[str, str, str] | None = None,
           names: tuple[str, ...] | None = None) -> tuple[Run, Result]:
    """The opening (see there) and the run: the handle and its Result."""
    run = opening(mech, structure, names)
    return run, result(run)


def result(run: Run) -> Result:
    """The run's Result, or the mechanism's message and a stop."""
    try:
        return compute.result(run)
    except ValueError as err:
        messages.error(err)
        st.stop()


def metrics(res: Result, items: dict[str, tuple]) -> None:
    """A row of metrics: the page's own (label -> (value, help or None)), then the run's cost."""
    items = {**items,
             "Work vs dense": (f"{res.cost['flops'] / res.cost['dense_flops']:.3g}×",
                               "the mechanism's floating-point operations divided by dense attention's"),
             "Run (this head)": (f"{res.cost['seconds']:.2f} s", None)}
    for col, (label, (value, help_)) in zip(st.columns(len(items)), items.items()):
        col.metric(label, value, help=help_)
