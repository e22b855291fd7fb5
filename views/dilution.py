"""Score dilution: as the text grows, each query's attention spreads over more keys.
Curves over prefixes of the text for dense and the chosen mechanisms, theory
beside them, and a planted needle on synthetic vectors."""
import streamlit as st

from explorer.analysis import dilution
from explorer.figures import dilution as figs
from explorer.mechanisms import DENSE, REGISTRY
from ui import charts, document, forms, settings
from ui.cache import cached, report
from ui.settings import Setting
from ui.state import canonical

CHOICES = tuple(k for k in REGISTRY if k != DENSE)
LONGEST = (256, 1024, 4096, 16384, 65536)
MECHS = Setting("dilution_mechs", ["segmented", "lowrank"], choices=CHOICES)
POINTS = Setting("dilution_points", 12, lo=2, hi=40)
QUERIES = Setting("dilution_queries", 128, lo=1, hi=4096)
TOPK = Setting("dilution_topk", 8, lo=1, hi=256)
SAMPLE = Setting("dilution_sample", "spread", choices=dilution.SAMPLES)
MARGIN = Setting("dilution_margin", 5.0, lo=0.0, hi=20.0)
NEEDLE_MARGIN = Setting("dilution_needle_margin", 8.0, lo=0.0, hi=20.0)
NOISE = Setting("dilution_noise", 1.0, lo=0.0, hi=3.0)
LONGEST_N = Setting("dilution_longest", 4096, choices=LONGEST)
KEY_AT = Setting("dilution_key_at", 0.5, lo=0.0, hi=1.0)
NEEDLE_LOG = Setting("dilution_needle_log", False)
settings.declare(MECHS, POINTS, QUERIES, TOPK, SAMPLE, MARGIN, NEEDLE_MARGIN, NOISE, LONGEST_N, KEY_AT, NEEDLE_LOG)


def download(frame, label: str, filename: str, key: str) -> None:
    st.download_button(f"{label} (CSV)", frame.to_csv(index=False), filename, "text/csv", key=key)


run = document.require()
doc = run.doc
st.title("Score dilution")
st.caption("As a sequence grows, each query's softmax is shared by more keys: the largest weight falls, the entropy "
           "rises, and noise takes mass from the tokens that matter. Here every statistic is measured on prefixes of "
           "this text of growing length (a log grid up to the whole text), for dense attention and each mechanism "
           "chosen below, with the theory of a uniform row and of a single needle beside it.")

# ---------------------------------------------------------------- choices
picked = st.multiselect("Mechanisms beside dense", CHOICES, key=MECHS.key, format_func=lambda k: REGISTRY[k].title,
                        help="Each runs on every prefix; slow mechanisms on long texts take a while (progress shown).")
params = {}
for mech_key in picked:
    mech = REGISTRY[mech_key]
    with st.expander(f"{mech.title} parameters"):
        params[mech_key] = forms.checked(mech, forms.param_form(mech, doc=doc))
mechanisms = {REGISTRY[k].title: (REGISTRY[k], REGISTRY[k].for_head(p, run.head, doc.heads)) for k, p in params.items()}

with st.expander("Measurement: prefixes and queries", expanded=False):
    a, b, c, d = st.columns(4)
    points = int(a.number_input("Prefix lengths", int(POINTS.lo), int(POINTS.hi), key=POINTS.key,
                                help="points of the log grid from 8 tokens to the whole text"))
    queries = int(b.number_input("Queries per prefix", int(QUERIES.lo), int(QUERIES.hi), key=QUERIES.key,
                                 help="query rows measured in each prefix"))
    topk = int(c.number_input("k of top-k mass", int(TOPK.lo), int(TOPK.hi), key=TOPK.key))
    sample = d.radio("Which queries", SAMPLE.choices, key=SAMPLE.key, horizontal=True,
                     help="spread: evenly spaced over the prefix (first and last included); last: the prefix's "
                          "last rows, which see the most context under a causal mask")
lengths = dilution.prefix_lengths(doc.n, points)
margin = st.slider("Needle margin for the theory lines (logit advantage of one key over the rest)", MARGIN.lo,
                   MARGIN.hi, step=0.5, key=MARGIN.key)

q, k, v = run.qkv()
measured = (tuple(lengths), queries, topk, sample)


def curves_of(mech_key: str | None):
    """Dense's curves (None) or one mechanism's, each kept apart so adding a mechanism computes only it."""
    name = REGISTRY[mech_key].title if mech_key else dilution.DENSE
    key = ("dilution curves", run.of(mech_key, params[mech_key]) if mech_key else run.reference(), measured)
    return cached(key, lambda: dilution.dilution_curves(
        q, k, v, lengths, {name: mechanisms[name]} if mech_key else None, causal=doc.causal, queries=queries,
        sample=sample, topk=topk, progress=report, dense=mech_key is None),
        label=f"Measuring prefixes ({name}), steps")


curves = dilution.Curves.merge(*[curves_of(m) for m in [None, *picked]])
theory = dilution.theory_rows(curves.lengths, margin, topk)

where = "evenly spaced over each prefix" if sample == "spread" else "the last of each prefix"
st.caption(f"Head {run.head}; {len(curves.lengths)} prefixes from {curves.lengths[0]:,} to {curves.lengths[-1]:,} "
           f"tokens; up to {queries:,} queries {where}. Lines are medians over those queries, shaded bands the 25-75% "
           "range. Mechanisms whose effective weights are signed (low rank) are measured on |w| / sum |w|.")
for name, share in curves.empty.items():
    if share.any():
        st.caption(f"{name}: up to {share.max():.0%} of the measured queries attended to no key at all (they count "
                   "as 0 in every statistic, support included).")

PANELS = [
    ("max_weight", True, "Max weight",
     "The largest share any single key takes of a query's attention. If attention diluted like a uniform row it "
     "would fall as 1/n; a relevant key with a fixed logit margin keeps its share until n approaches e^margin."),
    ("entropy", False, "Entropy (nats)",
     "How spread each attention row is: log n for a uniform row (the upper dashed line), near 0 for a row on one "
     "key. A curve that climbs parallel to log n means the rows keep spreading as the text grows."),
    ("entropy_norm", False, "Entropy normalised by log(prefix length)",
     "Entropy divided by that of a uniform row over the prefix (over the keys up to the query under a causal mask): "
     "1 is uniform, 0 is a single key. A flat curve means the spread grows as fast as the text; a falling one means "
     "attention stays focused (or, for a local mechanism, cannot spread beyond its window)."),
    ("support", True, "Effective support exp(entropy)",
     "The number of keys a row behaves as if it spread evenly over. Compare it with the prefix length (the uniform "
     "line): a mechanism limited to local windows flattens at its window size."),
    ("topk_mass", False, f"Mass on the top-{topk} keys",
     f"The share of attention the {topk} heaviest keys hold together. When it falls, the mass leaks to the long "
     "tail of weak keys, which is the noise that dilution adds."),
]
left, right = st.columns(2)
for i, (metric, log_y, title, caption) in enumerate(PANELS):
    with (left if i % 2 == 0 else right):
        charts.show(st, figs.band_chart(curves, metric, theory, log_y=log_y, title=title),
                        key=f"dilution_chart_{metric}")
        st.caption(caption)
        download(curves.table(metric, theory), title, f"dilution-{metric}.csv", f"dilution_csv_{metric}")
with right:
    download(curves.frame(), "Every curve, long format", "dilution-curves.csv", "dilution_csv_all")

# ---------------------------------------------------------------- needle experiment
charts.section("A planted needle",
               "Synthetic Gaussian queries and keys (no model): the last query's key is planted with a fixed logit "
               "margin over all other keys, whose logits are Gaussian noise. The same mechanisms and parameters as "
               "above run at every length; which of them keep the needle as n grows?")
a, b, c, d = st.columns(4)
needle_margin = a.slider("Margin", NEEDLE_MARGIN.lo, NEEDLE_MARGIN.hi, step=0.5, key=NEEDLE_MARGIN.key,
                         help="logit of the needle minus that of the noise keys")
noise = b.slider("Noise (std of the other logits)", NOISE.lo, NOISE.hi, step=0.1, key=NOISE.key)
longest = c.select_slider("Longest n", LONGEST, key=LONGEST_N.key)
key_at = d.slider("Needle key position (share of n)", KEY_AT.lo, KEY_AT.hi, step=0.05, key=KEY_AT.key,
                  help="0: the first token, 1: the query itself (the last token)")
planted = (needle_margin, noise, longest, key_at)


def needle_of(mech_key: str | None):
    """The needle's weight for dense (None) or one mechanism, each kept apart."""
    name = REGISTRY[mech_key].title if mech_key else dilution.DENSE
    spec = canonical(mechanisms[name][1]) if mech_key else ""
    return cached(("needle", planted, name, spec), lambda: dilution.needle_experiment(
        dilution.prefix_lengths(longest, 10), needle_margin, noise, {name: mechanisms[name]} if mech_key else None,
        key_at=key_at, progress=report, dense=mech_key is None), label=f"Planting needles ({name}), steps")


needle = dilution.Needle.merge(*[needle_of(m) for m in [None, *picked]])
log_needle = st.checkbox("Log scale for the weight", key=NEEDLE_LOG.key)
charts.show(st, figs.needle_chart(needle, log_y=log_needle), key="dilution_chart_needle")
st.caption("The weight the needle query puts on its key at each length: dense follows e^margin / (e^margin + n - 1) "
           "(exactly at noise 0; with noise the dashed Gaussian estimate uses the mean e^(noise²/2) of a noise key). "
           "A hollow marker means the mechanism cannot reach the key at all at that length; a curve above dense means "
           "the mechanism spends less of the query's attention on noise.")
final = needle.frame()
last = final[final["n"] == needle.lengths[-1]].set_index("mechanism")
dense_w = float(last.loc[dilution.DENSE, "weight"])
summary = last[["weight", "reach"]].assign(**{"vs dense": last["weight"] / dense_w if dense_w else float("nan")})
st.dataframe(summary.style.format("{:.4g}"))
st.caption(f"At n = {needle.lengths[-1]:,}: the needle's weight, whether the key is reachable, and the weight as a "
           "multiple of dense's. Low-rank weights are signed, so they can be negative.")
download(final, "Needle weights", "needle.csv", "dilution_csv_needle")
