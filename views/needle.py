"""Needle: a fact planted in the text at several places and asked back. Where the model loses it
(dense and each mechanism swapped in), which heads copy it (retrieval heads; a click opens one on the
Dense attention page), and what switching those heads off costs against as many random heads."""
import streamlit as st

from explorer.mechanisms import DENSE
from ui import document, inside, needle, settings

settings.declare(*needle.SETTINGS)

document.require()
needle.header()
enc = document.encoding()
inside.causal_model(enc, "to ask it back a fact")
how, positions, params = needle.setup()
found = needle.probes(enc, how, positions, params)
if DENSE not in found:
    st.stop()
needle.curve(found)
needle.retrieval(found[DENSE])
needle.ablation(enc, how, found[DENSE])
