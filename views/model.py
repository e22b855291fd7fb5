"""The whole model at a glance: every layer and head of the model over the whole text, from one
forward pass; choosing a square makes that layer and head the current one on every page."""
import streamlit as st

from explorer.analysis.model_view import COLUMNS
from explorer.figures import model_view as figs
from explorer.mechanisms import DENSE, REGISTRY
from ui import charts, compute, document, forms, needle, refine, settings
from ui.messages import plain
from ui.sidebar import HEAD, LAYER, PICK

METRICS = ("entropy", "first_mass", "local_mass", "distance", "half_keys")
QUERIES = settings.Setting("model_queries", 512, lo=16, hi=8192)
LOCAL = settings.Setting("model_local", 8, lo=0, hi=4096)
SHOWN = settings.Setting("model_metrics", ["entropy", "first_mass", "local_mass", "distance"], choices=METRICS)
MECH = settings.Setting("model_mechanism", "", choices=("", *(k for k in REGISTRY if k != DENSE)))
settings.declare(QUERIES, LOCAL, SHOWN, MECH)

run = document.require()
doc = run.doc
st.title("Model view")
st.caption("Every layer and head of the model over the whole text, from one forward pass that captures all layers at "
           "once. Each square is one head; click one to make that layer and head the current one on every page "
           "(no encoding again: the capture is kept).")
enc = document.encoding()
if enc.synthetic:
    st.info("Synthetic vectors have no model layers: encode a text to see the whole model.")
    st.stop()

a, b, c = st.columns([1, 1, 3])
queries = int(a.number_input("Sampled queries per head", int(QUERIES.lo), int(QUERIES.hi), key=QUERIES.key, step=64,
                             help="evenly spaced query rows; every statistic is exact for them"))
local = int(b.number_input("Local distance (tokens)", int(LOCAL.lo), int(LOCAL.hi), key=LOCAL.key,
                           help="local mass counts the keys within this distance of the query"))
shown = c.multiselect("Statistics", METRICS, key=SHOWN.key, format_func=COLUMNS.get) or ["entropy"]
mech = st.selectbox("Output error of a mechanism (each head runs it once: minutes on long texts)", MECH.choices,
                    key=MECH.key, format_func=lambda k: "none" if not k else REGISTRY[k].title)
params = {}
if mech:
    params = forms.forms_of([mech], doc=doc)[mech]
    shown = [*shown, "rel_error"]

frame, measured, whole = compute.model_grid_now(enc, queries, local, mech or None, params)
layers_differ = document.rules_by_layer(compute.capture(measured))
st.caption(document.shown_as(doc) + (" " + layers_differ if layers_differ else ""))
retrieved = needle.retrieval_of(enc)  # the Needle page's probe on this text and model, once it ran
if retrieved is not None:
    frame = frame.assign(retrieval=frame.merge(retrieved, how="left", on=["layer", "head"]).retrieval.to_numpy())
    shown = [*shown, "retrieval"]


def whole_text() -> None:
    """Where the whole text's grid is; when it is made, the page draws it instead of the first window's."""
    now = compute.grid_progress(enc, queries, local, mech or None, params)
    if now is None:
        st.rerun()
    st.caption(f"The whole text: {now}…")


if whole is not None:
    going = compute.grid_progress(enc, queries, local, mech or None, params) is not None
    st.info(f"For now the first model window only: its {compute.capture(measured).docs[0].n:,} tokens of "
            f"{doc.n:,}, from a forward pass of its own. " + ("The whole text's grid replaces it once measured "
                                                                "(below, how far it is)." if going else
                                                                f"On the whole text: {plain(whole)}."))
    if going:
        st.fragment(whole_text, run_every=refine.REFRESH_S)()
charts.section("Every layer and head", f"{frame.queries.iloc[0]:,} evenly spaced queries per head, exact for those "
               f"queries; statistics took {frame.attrs['seconds']:.1f} s after the forward pass. Normalised entropy is "
               "1 for a uniform row; the first token's mass is the attention sink of Xiao et al. (2024); local mass "
               f"counts keys within {local} tokens; distances and key counts are on a log colour scale.")
event = charts.show(st, figs.head_grid(frame, shown, chosen=(doc.layer, run.head)), key="model_grid",
                    on_select="rerun", selection_mode="points")
chosen = figs.picked(event)
if chosen and chosen != (doc.layer, run.head):
    st.session_state[PICK] = chosen
    st.rerun()
st.download_button("The grid's data (CSV)", lambda: frame.to_csv(index=False), "model-view.csv", "text/csv",
                   on_click="ignore")
st.caption(f"Current: layer {st.session_state[LAYER.key]}, head {st.session_state[HEAD.key]} (outlined).")
