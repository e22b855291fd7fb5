"""The dilution remedies as a toggle: which query scaling dense attention and every mechanism
run with (explorer.analysis.remedies), on the pages that offer it (Score dilution, Compare).

Settings: "remedy" (a key of REMEDIES) and each remedy's parameter "p.<remedy>.<param>".
"""
from __future__ import annotations

import streamlit as st

from explorer.analysis.remedies import REMEDIES, Spec
from ui import forms, settings

REMEDY = settings.Setting("remedy", "none", choices=tuple(REMEDIES))
settings.register(REMEDY, *(settings.param_setting(r, p) for r in REMEDIES.values() for p in r.params))


def picker(where=st) -> Spec:
    """The remedy chosen, with its parameters; None for plain softmax."""
    st.session_state.setdefault(REMEDY.key, REMEDY.default)
    with where.container():
        kind = st.radio("Remedy for dilution, applied to dense and to every mechanism", REMEDY.choices,
                        key=REMEDY.key, horizontal=True, format_func=lambda k: REMEDIES[k].title,
                        help="each query's logits are rescaled before attention: " +
                             " ".join(f"{r.title}: {r.summary}" for r in REMEDIES.values() if r.key != "none"))
        if kind == "none":
            return None
        st.caption(REMEDIES[kind].summary)
        return kind, forms.checked(REMEDIES[kind], forms.param_form(REMEDIES[kind], columns=3))
