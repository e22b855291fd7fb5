"""Low-rank attention: Linformer, Nystromformer and the truncated SVD beside dense
attention, the spectrum of this head's attention matrix, and error against k."""
from collections import OrderedDict

import streamlit as st

from explorer.analysis import spectra
from explorer.figures import lowrank as figs
from explorer.mechanisms import REGISTRY
from explorer.analysis.lowrank import signed_mass
from explorer.core.rows import sample_rows
from ui import compute, panels, state

MECH = REGISTRY["lowrank"]
AUTO_N = 8192  # beyond this on a CPU the spectrum and curves (minutes of streamed passes) wait for a button
SPECTRUM_RANK = 256  # singular values computed by the randomized method
SIGNED_ROWS = 256  # queries whose weights are checked for sign and row sums
KEEP = 16


@st.cache_resource(show_spinner=False)
def _store() -> OrderedDict:
    """Results of this page's slow steps, newest last (outside st.cache so progress bars can be driven)."""
    return OrderedDict()


def remembered(name: tuple, make):
    store = _store()
    if name not in store:
        store[name] = make()
        while len(store) > KEEP:
            store.popitem(last=False)
    store.move_to_end(name)
    return store[name]


def curve_cap(n: int) -> int:
    """Largest k on the error curves: the SVD's streamed passes cost n^2 (d + k), so long texts stop sooner."""
    return 256 if n <= 16384 else 128


key, doc, head = state.require_doc()
st.title("Low-rank attention")
st.caption("All three methods squeeze attention through k numbers per query. **Linformer** projects keys and values "
           "along the sequence to k rows (seeded Gaussian or segment means) and attends to those; **Nystromformer** "
           "rebuilds the attention matrix from k landmark tokens (segment means) and a pseudo-inverse; the **SVD** is "
           "the best rank-k matrix there is, the yardstick for the other two. Every map shows the weights each method "
           "effectively puts on the original tokens.")
if doc.causal:
    st.info("This model's attention is causal. Linformer and Nystromformer have no causal form, so the low-rank "
            "methods, the spectrum and the error curves here all work on the bidirectional matrix softmax(qkᵀ/√d); "
            "the dense map and the fidelity table show the model's own causal attention.")

params = panels.param_form(MECH, doc=doc)
res = panels.run_or_stop(key, doc, head, MECH, params)
s = res.structure
p_json = compute.params_json(params)
q, k, v = doc.head(head)

a, b, c, d = st.columns(4)
a.metric("k used", s["rank"], help="the rank parameter, clamped to the text length")
b.metric("FLOPs vs dense", f"{res.cost['flops'] / res.cost['dense_flops']:.1%}",
         help="the SVD yardstick streams the dense matrix several times: it costs more than dense")
c.metric("Run time (this head)", f"{res.cost['seconds']:.2f} s")
if s["method"] == "linformer":
    with st.spinner("Checking the signs of the effective weights…"):
        mass = remembered(("signed", key, head, p_json),
                          lambda: signed_mass(res, sample_rows(doc.n, SIGNED_ROWS).to(q.device)))
    d.metric("Negative weight share", f"{mass['negative_share']:.1%}",
             help="share of the total |weight| carried by negative weights, on evenly spaced queries")
    st.caption(f"Effective weights are softmax(q (EK)ᵀ/√d) · F. Rows sum to between {mass['row_sum_min']:.3g} and "
               f"{mass['row_sum_max']:.3g} (softmax attention: exactly 1)"
               + (", and Gaussian projections make weights negative: the maps use a red-blue scale centred on 0."
                  if s["projection"] == "gaussian" else "; segment means keep them a distribution."))
elif s["method"] == "nystrom":
    residual = float(s["pinv_residual"].max())
    d.metric("Pseudo-inverse residual", f"{residual:.2e}", help="||A Z A − A||_F / ||A||_F of the landmark kernel A")
    how = ("torch.linalg.pinv" if s["pinv"] == "exact"
           else f"the paper's iterative Moore-Penrose method, {s['pinv_iters']} iterations")
    st.caption(f"Pseudo-inverse: {how}. Effective weights are softmax(q K̃ᵀ) · pinv(softmax(Q̃ K̃ᵀ)) · "
               "softmax(Q̃ kᵀ) over the landmarks' segment means; they can be negative too.")
else:
    d.metric("‖P − P_k‖_F / ‖P‖_F", f"{float(s['relative_frobenius_error'][0]):.3g}")
    st.caption(f"{s['error_note']}. Spectral error ‖P − P_k‖₂ "
               f"{'=' if s['solver'] == 'exact' else '≤'} {float(s['spectral_error'][0]):.3g}.")

edges = s.get("landmark_edges") or s.get("segment_edges")
if edges:
    st.caption("Segments along the text: each colour is one landmark (Nystrom) or one pooled row (Linformer). "
               "Lengths differ by at most one token when k does not divide the text.")
    st.plotly_chart(figs.segment_strip(edges, doc.tokens, "segment"), width="stretch", key="lowrank_segments")

st.subheader("Dense and low-rank, side by side")
st.caption("The same query and key window for dense attention and for the chosen method, on one colour scale. "
           "Signed weights switch both maps to a red-blue scale centred on zero (blue positive, red negative).")
window = panels.zoom(doc.n)
panels.map_pair(key, doc, head, MECH, params, window, diverging=True)

st.subheader("One query, every key")
st.caption("The weights one query puts on each token of the text, dense beside the method. Long texts are pooled: "
           "the line is the mean of each stretch and the band spans its min and max.")
query = panels.query_picker(doc)
dense_row = compute.query_row(key, head, "", "", query, doc)
mech_row = compute.query_row(key, head, MECH.key, p_json, query, doc)
st.plotly_chart(figs.weight_rows(dense_row, mech_row, doc.tokens, s["method"], query), width="stretch",
                key="lowrank_row")

st.subheader("How low-rank is this head?")
st.caption("Singular values of this head's dense attention matrix (bidirectional) and the share of its squared "
           "Frobenius norm the top k of them hold. The effective rank is the k that holds 90% or 99%; the dotted "
           "line is the k chosen above. A fast-falling spectrum means low-rank methods can work here.")
auto = doc.n <= AUTO_N or q.device.type == "cuda"
asked = st.session_state.get("lowrank_go") == (key, head)
if not (auto or asked):
    st.info(f"{doc.n:,} tokens: the spectrum and the error curves stream the whole attention matrix several times "
            "(minutes on a CPU).")
    if st.button("Compute spectrum and error curves", key="lowrank_go_button"):
        st.session_state["lowrank_go"] = (key, head)
        asked = True
if auto or asked:
    with st.spinner("Computing singular values…"):
        spec = remembered(("spectrum", key, head), lambda: spectra.spectrum(q, k, rank=SPECTRUM_RANK))
    ranks = {level: spec.effective_rank(level) for level in figs.LEVELS}
    e1, e2, e3 = st.columns(3)
    for col, level in ((e1, 0.9), (e2, 0.99)):
        rank = ranks[level]
        col.metric(f"Effective rank ({level:.0%})", f"{rank:,}" if rank else f"> {spec.values.numel():,}")
    e3.metric("Largest singular value", f"{float(spec.values[0]):.4g}")
    st.plotly_chart(figs.spectrum_chart(spec.values, spec.energy, ranks, chosen=s["rank"]), width="stretch",
                    key="lowrank_spectrum")
    note = f"Method: {spec.method}."
    if spec.residual_bound:
        note += (f" Every computed σᵢ is a lower bound of the true one and within {spec.residual_bound:.3g} of it "
                 f"(a bound that holds with probability 1 − 10⁻¹⁰); the values not computed hold "
                 f"{spec.residual_fro ** 2 / spec.total_energy:.2%} of the energy.")
    st.caption(note)

    st.subheader("Error against k")
    settings = {name: value for name, value in params.items() if name not in ("method", "rank")}
    ks = spectra.k_grid(doc.n, curve_cap(doc.n))
    st.caption(f"Linformer and Nystrom run at each k in {ks} with the settings above; the SVD is computed once at "
               f"k = {ks[-1]} and truncated. Left: relative error of the output against dense; right: relative "
               f"Frobenius error of the effective weights. Measured on up to 512 evenly spaced queries; the SVD "
               "line is the floor no rank-k method can beat on the weights.")
    bar = st.progress(0.0, text="error curves")
    try:
        curves = remembered(("curves", key, head, compute.params_json(settings), tuple(ks)),
                            lambda: spectra.error_curves(q, k, v, ks=ks, settings=settings,
                                                         progress=lambda f, text: bar.progress(min(f, 1.0), text=text)))
    except ValueError as err:
        st.error(str(err))
    else:
        st.plotly_chart(figs.error_curves_chart(curves.ks, curves.output_error, curves.weight_error,
                                                chosen=s["rank"]), width="stretch", key="lowrank_curves")
        st.caption(f"SVD: {curves.svd_note}.")
    bar.empty()

st.subheader("Fidelity against dense")
panels.fidelity_panel(key, doc, head, MECH, params)
