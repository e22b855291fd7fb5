"""Low-rank attention: Linformer, Nystromformer and the truncated SVD beside dense
attention, the spectrum of this head's attention matrix, and error against k."""
import streamlit as st

from explorer.analysis import spectra
from explorer.analysis.lowrank import signed_mass
from explorer.core.rows import sample_rows
from explorer.figures import lowrank as figs
from explorer.mechanisms import REGISTRY
from ui import charts, compute, fidelity, forms, inspector, maps
from ui.cache import computation, report

MECH = REGISTRY["lowrank"]
AUTO_N = 8192  # beyond this on a CPU the spectrum and curves (minutes of streamed passes) wait for a button
SPECTRUM_RANK = 256  # singular values computed by the randomized method
SIGNED_ROWS = 256  # queries whose weights are checked for sign and row sums


@computation()
def signed_share(run):
    """How much of Linformer's |weight| is negative, on evenly spaced queries."""
    return signed_mass(compute.result(run), sample_rows(run.doc.n, SIGNED_ROWS).to(run.doc.q.device))


@computation("Computing singular values")
def spectrum(run):
    """The singular values of the head's attention matrix (the run is dense's)."""
    q, k, _ = compute.qkv(run)
    return spectra.spectrum(q, k, rank=SPECTRUM_RANK)


@computation("Error curves, steps")
def error_curves(run, ks: tuple):
    """Linformer, Nystrom and the SVD at each k; the run's parameters are the settings besides method and rank."""
    return spectra.error_curves(*compute.qkv(run), ks=list(ks), settings=run.params, progress=report)

run, res = forms.header(MECH)
doc, s, params = run.doc, res.structure, run.params
if doc.causal:
    st.info("This model's attention is causal. Linformer and Nystromformer have no causal form, so the low-rank "
            "methods, the spectrum and the error curves here all work on the bidirectional matrix softmax(qkᵀ/√d); "
            "the dense map and the fidelity table show the model's own causal attention.")
q, k, v = compute.qkv(run)

items = {"k used": (s.rank, "the rank parameter, clamped to the text length")}
if s.method == "linformer":
    mass = signed_share(run)
    items["Negative weight share"] = (f"{mass['negative_share']:.1%}", "share of the total |weight| carried by "
                                      "negative weights, on evenly spaced queries")
elif s.method == "nystrom":
    items["Pseudo-inverse residual"] = (f"{float(s.pinv_residual.max()):.2e}",
                                        "||A Z A − A||_F / ||A||_F of the landmark kernel A")
else:
    items["‖P − P_k‖_F / ‖P‖_F"] = (f"{float(s.relative_frobenius_error[0]):.3g}", None)
forms.metrics(res, items)
if s.method == "linformer":
    st.caption(f"Effective weights are softmax(q (EK)ᵀ/√d) · F. Rows sum to between {mass['row_sum_min']:.3g} and "
               f"{mass['row_sum_max']:.3g} (softmax attention: exactly 1)"
               + (", and Gaussian projections make weights negative: the maps use a red-blue scale centred on 0."
                  if s.projection == "gaussian" else "; segment means keep them a distribution."))
elif s.method == "nystrom":
    how = ("torch.linalg.pinv" if s.pinv == "exact"
           else f"the paper's iterative Moore-Penrose method, {s.pinv_iters} iterations")
    st.caption(f"Pseudo-inverse: {how}. Effective weights are softmax(q K̃ᵀ) · pinv(softmax(Q̃ K̃ᵀ)) · "
               "softmax(Q̃ kᵀ) over the landmarks' segment means; they can be negative too.")
else:
    st.caption(f"{s.error_note}. Spectral error ‖P − P_k‖₂ "
               f"{'=' if s.solver == 'exact' else '≤'} {float(s.spectral_error[0]):.3g}.")

edges = s.pooled_edges
if edges:
    st.caption("Segments along the text: each colour is one landmark (Nystrom) or one pooled row (Linformer). "
               "Lengths differ by at most one token when k does not divide the text.")
    charts.show(st, figs.segment_strip(edges, doc.pieces, "segment"), key="lowrank_segments")

maps.pair_section("Dense and low-rank, side by side",
                  "The same query and key window for dense attention and for the chosen method, on shared scales. "
                  "Signed weights switch both maps to a red-blue scale centred on zero (blue positive, red "
                  "negative).", run, MECH.title, diverging=True)

charts.section("One query, every key",
               "The weights one query puts on each token of the text, dense beside the method. Long texts are pooled: "
               "the line is the mean of each stretch and the band spans its min and max.")
query = inspector.query_picker(doc)
charts.show(st, figs.weight_rows(compute.query_row(run.reference(), query), compute.query_row(run, query), doc.pieces,
                                 MECH.params[0].text_of(s.method), query), key="lowrank_row")

charts.section("How low-rank is this head?",
               "Singular values of this head's dense attention matrix (bidirectional) and the share of its squared "
               "Frobenius norm the top k of them hold. The effective rank is the k that holds 90% or 99%; the dotted "
               "line is the k chosen above. A fast-falling spectrum means low-rank methods can work here.")
settings_ = {name: value for name, value in params.items() if name not in ("method", "rank")}
ks = spectra.k_grid(doc.n, 256 if doc.n <= 16384 else 128)  # the SVD's streamed passes cost n² (d + k)
asked = doc.n <= AUTO_N or q.device.type == "cuda" or spectrum.made(run.reference())
if not asked:
    st.info(f"{doc.n:,} tokens: the spectrum and the error curves stream the whole attention matrix several times "
            "(minutes on a CPU).")
    asked = st.button("Compute spectrum and error curves", key="lowrank_go_button")
if asked:
    spec = spectrum(run.reference())
    ranks = {level: spec.effective_rank(level) for level in figs.LEVELS}
    e1, e2, e3 = st.columns(3)
    for col, level in ((e1, 0.9), (e2, 0.99)):
        rank = ranks[level]
        col.metric(f"Effective rank ({level:.0%})", f"{rank:,}" if rank else f"> {spec.values.numel():,}")
    e3.metric("Largest singular value", f"{float(spec.values[0]):.4g}")
    charts.show(st, figs.spectrum_chart(spec.values, spec.energy, ranks, chosen=s.rank),
                    key="lowrank_spectrum")
    note = f"Method: {spec.method}."
    if spec.residual_bound:
        note += (f" Every computed σᵢ is a lower bound of the true one and within {spec.residual_bound:.3g} of it "
                 f"(a bound that holds with probability 1 − 10⁻¹⁰); the values not computed hold "
                 f"{spec.residual_fro ** 2 / spec.total_energy:.2%} of the energy.")
    st.caption(note)

    charts.section("Error against k")
    st.caption(f"Linformer and Nystrom run at each k in {ks} with the settings above; the SVD is computed once at "
               f"k = {ks[-1]} and truncated. Left: relative error of the output against dense; right: relative "
               f"Frobenius error of the effective weights. Measured on up to 512 evenly spaced queries; the SVD "
               "line is the floor no rank-k method can beat on the weights.")
    curves = error_curves(run.of(MECH.key, settings_), tuple(ks))
    charts.show(st, figs.error_curves_chart(curves.ks, curves.output_error, curves.weight_error,
                                            chosen=s.rank), key="lowrank_curves")
    st.caption(f"SVD: {curves.svd_note}.")

charts.section("Fidelity against dense")
fidelity.panel(run)
