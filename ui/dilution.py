"""The Score dilution page's sections, one experiment each: prefixes of the text, the reference setup
in closed form, a passage and a later question pulled apart, a planted needle, and attention sinks.

Their settings belong to views/dilution.py (keys "dilution_..."), which declares SETTINGS before
drawing. Every measurement caches dense and each mechanism apart (`Picked.apart`), so adding a
mechanism computes only it, and a remedy is measured beside the plain curves, never instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import streamlit as st

from explorer.analysis import dilution, needle_text, remedies
from explorer.analysis.experiment import DENSE, Mechanisms
from explorer.analysis.sinks import THRESHOLD, sink_measure, verdict
from explorer.core.rows import sample_rows
from explorer.figures import dilution as figs
from explorer.figures import sinks as sink_figs
from explorer.mechanisms import REGISTRY
from ui import charts, forms, maps
from ui import remedies as remedy_ui
from ui.cache import computation, report
from ui.messages import plain
from ui.settings import Setting
from ui.state import Run

CHOICES = tuple(k for k in REGISTRY if k != DENSE)
LONGEST = (256, 1024, 4096, 16384, 65536)
SINK_ROWS = 512  # queries the sink measure is taken on, evenly spaced, on long texts
SINKS = REGISTRY["sinks"]
MECHS = Setting("dilution_mechs", ["segmented", "lowrank", "sinks"], choices=CHOICES)
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
PASSAGE = Setting("dilution_passage", "", max_chars=200)
PASSAGE_END = Setting("dilution_passage_end", "", max_chars=200)
QUESTION = Setting("dilution_question", "", max_chars=200)
TEXT_X = Setting("dilution_text_x", "n", choices=("n", "distance"))
SINK_THRESHOLD = Setting("dilution_sink_threshold", THRESHOLD, lo=0.0, hi=1.0)
SETTINGS = (MECHS, POINTS, QUERIES, TOPK, SAMPLE, MARGIN, NEEDLE_MARGIN, NOISE, LONGEST_N, KEY_AT, NEEDLE_LOG,
            PASSAGE, PASSAGE_END, QUESTION, TEXT_X, SINK_THRESHOLD)

PANELS = [  # (metric, log y, title, caption) of the prefix charts; {topk} is the measured k
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
    ("topk_mass", False, "Mass on the top-{topk} keys",
     "The share of attention the {topk} heaviest keys hold together. When it falls, the mass leaks to the long "
     "tail of weak keys, which is the noise that dilution adds."),
]


@dataclass(frozen=True)
class Picked:
    """What the page's choices set for every section: the run, the mechanisms beside dense, the remedy."""

    run: Run
    params: dict[str, dict]  # mechanism key -> its checked parameters, as the form gave them
    remedy: remedies.Spec

    @property
    def mechanisms(self) -> Mechanisms:
        """Display name -> (Mechanism, parameters for the run's head)."""
        run = self.run
        return {REGISTRY[k].title: (REGISTRY[k], REGISTRY[k].for_head(p, run.head, run.doc.heads))
                for k, p in self.params.items()}

    def apart(self) -> list[tuple[str, Mechanisms | None]]:
        """(name, mechanisms) of dense alone (None), then of each mechanism alone, to cache one by one."""
        return [(DENSE, None), *((name, {name: pair}) for name, pair in self.mechanisms.items())]


def download(frame, label: str, filename: str, key: str) -> None:
    st.download_button(f"{label} (CSV)", lambda: frame.to_csv(index=False), filename, "text/csv", key=key,
                       on_click="ignore")


def without_and_with(where, spec: remedies.Spec, without: dict, remedied: dict, x_title: str, y_title: str, key: str,
                     log_y: bool = False) -> None:
    """The same lines solid without the remedy and dashed with it."""
    charts.show(where, figs.remedy_chart(without, remedied, remedies.REMEDIES[spec[0]].title, x_title, y_title,
                                         log_y=log_y), key=key)


def header() -> None:
    st.title("Score dilution")
    st.caption("As a sequence grows, each query's softmax is shared by more keys: the largest weight falls, the "
               "entropy rises, and noise takes mass from the tokens that matter. Here every statistic is measured on "
               "prefixes of this text of growing length, on a passage and a later question pulled apart by the "
               "text's own material, and on a planted needle, for dense attention and each mechanism chosen below, "
               "beside the theory.")


def choose(run: Run) -> Picked:
    """The mechanisms beside dense, each with its parameter form, and the remedy."""
    picked = st.multiselect("Mechanisms beside dense", CHOICES, key=MECHS.key, format_func=lambda k: REGISTRY[k].title,
                            help="Each runs on every prefix; slow mechanisms on long texts take a while (progress "
                                 "shown).")
    return Picked(run, forms.forms_of(picked, doc=run.doc), remedy_ui.picker())


# ---------------------------------------------------------------- prefixes of this text

class Measurement(NamedTuple):
    """How the prefixes are measured (the expander's choices); a tuple, so a plain part of cache keys."""

    lengths: tuple[int, ...]
    queries: int
    topk: int
    sample: str


def measurement(n: int) -> Measurement:
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
    return Measurement(tuple(dilution.prefix_lengths(n, points)), queries, topk, sample)


def prefix_curves(picked: Picked, how: Measurement, remedy: remedies.Spec = None) -> dilution.Curves:
    """Dense's curves and each mechanism's on the run's head, measured and cached one by one."""
    return dilution.Curves.merge(*[prefix_curve(picked.run, name, mechanisms, how, remedy)
                                   for name, mechanisms in picked.apart()])


@computation(lambda run, name, mechanisms, how, remedy:
             f"Measuring prefixes ({name}{', ' + remedies.label(remedy) if remedy else ''}), steps")
def prefix_curve(run: Run, name: str, mechanisms: Mechanisms | None, how: Measurement,
                 remedy: remedies.Spec) -> dilution.Curves:
    """Dense's curves (mechanisms None) or one mechanism's, on the run's head."""
    q, k, v = run.doc.head(run.head)  # as the model computed them: the remedy is applied by the measurement
    return dilution.dilution_curves(q, k, v, how.lengths, mechanisms, causal=run.doc.causal, queries=how.queries,
                                    sample=how.sample, topk=how.topk, progress=report, dense=mechanisms is None,
                                    remedy=remedy)


def prefixes(picked: Picked) -> None:
    """Every statistic on prefixes of the text, and the same without and with the remedy."""
    how = measurement(picked.run.doc.n)
    margin = st.slider("Needle margin for the theory lines (logit advantage of one key over the rest)", MARGIN.lo,
                       MARGIN.hi, step=0.5, key=MARGIN.key)
    curves = prefix_curves(picked, how)
    theory = dilution.theory_rows(curves.lengths, margin, how.topk)
    charts.section("On prefixes of this text")
    where = "evenly spaced over each prefix" if how.sample == "spread" else "the last of each prefix"
    st.caption(f"Head {picked.run.head}; {len(curves.lengths)} prefixes from {curves.lengths[0]:,} to "
               f"{curves.lengths[-1]:,} tokens; up to {how.queries:,} queries {where}. Lines are medians over those "
               "queries, shaded bands the 25-75% range. Mechanisms whose effective weights are signed (low rank) are "
               "measured on |w| / sum |w|.")
    for name, share in curves.empty.items():
        if share.any():
            st.caption(f"{name}: up to {share.max():.0%} of the measured queries attended to no key at all (they "
                       "count as 0 in every statistic, support included).")
    left, right = st.columns(2)
    for i, (metric, log_y, title, caption) in enumerate(PANELS):
        title, caption = title.format(topk=how.topk), caption.format(topk=how.topk)
        with (left if i % 2 == 0 else right):
            charts.show(st, figs.band_chart(curves, metric, theory, log_y=log_y, title=title),
                        key=f"dilution_chart_{metric}")
            st.caption(caption)
            download(curves.table(metric, theory), title, f"dilution-{metric}.csv", f"dilution_csv_{metric}")
    with right:
        download(curves.frame(), "Every curve, long format", "dilution-curves.csv", "dilution_csv_all")
    if picked.remedy:
        prefixes_remedied(curves, prefix_curves(picked, how, picked.remedy), picked.remedy)


def prefixes_remedied(curves: dilution.Curves, remedied: dilution.Curves, spec: remedies.Spec) -> None:
    charts.section(f"The prefixes without and with {remedies.label(spec)}",
                   "The same medians, solid without the remedy and dashed with it: a remedy that works keeps the max "
                   "weight up and the normalised entropy down as the prefix grows.")
    left, right = st.columns(2)
    for col, metric, log_y in ((left, "max_weight", True), (right, "entropy_norm", False)):
        without_and_with(col, spec, figs.curve_lines(curves, metric), figs.curve_lines(remedied, metric),
                         "prefix length (tokens, log)", dilution.LABELS[metric], f"dilution_remedy_{metric}", log_y)


# ---------------------------------------------------------------- the reference setup

def reference(spec: remedies.Spec) -> None:
    """Nakanishi's setup in closed form, for plain softmax, both remedies and the one chosen."""
    charts.section("The reference setup, in closed form",
                   "Nakanishi's first figure: one logit +3 among n - 1 at -2. Plain softmax keeps 1 / (1 + (n - 1) "
                   "e^-5) on the +3 key, which falls towards 0 as n grows; length-scaled softmax keeps 1 / (1 + "
                   "(n - 1) n^(-5 s)), which stays near 1 once 5 s > 1.")
    specs = {"plain softmax": None, "SSMax, s = 1": ("ssmax", {"s": 1.0}), "Llama 4 (defaults)": ("llama4", {})}
    if spec and spec not in specs.values():
        specs[remedies.label(spec)] = spec
    charts.show(st, figs.reference_chart(dilution.prefix_lengths(2**20, 60, start=2), specs), key="dilution_reference")


# ---------------------------------------------------------------- a passage and a question of this text

def marker_inputs(text: str) -> tuple[str, str, str]:
    """The passage's and the question's markers; empty ones start from those the text is known to hold."""
    known = needle_text.markers_in(text)
    if known:
        (begin, end), (ask, _) = known
        for s, value in ((PASSAGE, begin), (PASSAGE_END, end), (QUESTION, ask)):
            if not st.session_state[s.key]:
                st.session_state[s.key] = value
    a, b, c = st.columns(3)
    return (a.text_input("Passage begins with", key=PASSAGE.key, max_chars=PASSAGE.max_chars,
                         placeholder="text where the passage starts"),
            b.text_input("Passage ends with", key=PASSAGE_END.key, max_chars=PASSAGE_END.max_chars,
                         placeholder="text where it ends (optional)"),
            c.text_input("Question begins with", key=QUESTION.key, max_chars=QUESTION.max_chars,
                         placeholder="text of a later question about it"))


def passage_and_question(picked: Picked) -> None:
    """The question's attention onto its passage as the text's own material is put between them."""
    charts.section("A passage and a later question, pulled apart",
                   "How much of the question's attention lands on the passage it asks about, as more and more of "
                   "the text's own material is put between them (built at the level of queries, keys and values: the "
                   "passage, then filler tokens of this text, then the question).")
    doc = picked.run.doc
    begin, end, ask = marker_inputs(doc.text)
    if not (begin.strip() and ask.strip()):
        st.info("Mark a passage and a later question about it in this text (the bundled needle report has them "
                "filled in): the question's attention onto the passage is then measured as the two move apart.")
        return
    try:
        spans = needle_text.marked_spans(doc.text, doc.offsets, (begin, end or None), (ask, None))
    except ValueError as err:
        st.warning(plain(str(err)))
        return
    (p0, p1), (q0, q1) = spans
    st.caption(f"Passage: tokens {p0}–{p1 - 1} ({plain(doc.text[doc.offsets[p0][0]:doc.offsets[p1 - 1][1]][:120])}"
               f"…); question: tokens {q0}–{q1 - 1}.")
    apart = text_dilution(picked, spans)
    x = st.radio("Against", TEXT_X.choices, key=TEXT_X.key, horizontal=True,
                 format_func={"n": "sequence length", "distance": "tokens between them"}.get)
    charts.show(st, figs.text_chart(apart, x=x), key="dilution_text")
    st.caption("Lines: the mean over heads and question tokens of the attention they put on the passage's tokens "
               "(bands: 25-75%); dashed: what a uniform row would give. A mechanism that cannot reach the "
               "passage drops to zero.")
    download(apart.frame(), "Passage and question", "passage-question.csv", "dilution_csv_text")
    if picked.remedy:
        without_and_with(st, picked.remedy, figs.text_lines(apart),
                         figs.text_lines(text_dilution(picked, spans, picked.remedy)),
                         "sequence length (tokens, log)", "mass on the passage", "dilution_text_remedy")


def text_dilution(picked: Picked, spans, remedy: remedies.Spec = None) -> needle_text.TextNeedle:
    return passage_apart(picked.run, spans, picked.mechanisms, remedy)


@computation("Pulling the passage and the question apart, steps")
def passage_apart(run: Run, spans, mechanisms: Mechanisms | None, remedy: remedies.Spec) -> needle_text.TextNeedle:
    q, k, v = run.doc.head(run.head)
    return needle_text.text_dilution(q, k, v, run.doc.offsets, *spans, mechanisms=mechanisms, causal=run.doc.causal,
                                     remedy=remedy, progress=report)


# ---------------------------------------------------------------- a planted needle

class Planted(NamedTuple):
    """The needle's settings (the section's sliders); a tuple, so a plain part of cache keys."""

    margin: float
    noise: float
    longest: int
    key_at: float


def planted() -> Planted:
    a, b, c, d = st.columns(4)
    margin = a.slider("Margin", NEEDLE_MARGIN.lo, NEEDLE_MARGIN.hi, step=0.5, key=NEEDLE_MARGIN.key,
                      help="logit of the needle minus that of the noise keys")
    noise = b.slider("Noise (std of the other logits)", NOISE.lo, NOISE.hi, step=0.1, key=NOISE.key)
    longest = c.select_slider("Longest n", LONGEST, key=LONGEST_N.key)
    key_at = d.slider("Needle key position (share of n)", KEY_AT.lo, KEY_AT.hi, step=0.05, key=KEY_AT.key,
                      help="0: the first token, 1: the query itself (the last token)")
    return Planted(margin, noise, longest, key_at)


def needles(picked: Picked, at: Planted, remedy: remedies.Spec = None) -> dilution.Needle:
    """The needle's weight for dense and each mechanism, measured and cached one by one."""
    return dilution.Needle.merge(*[planted_needle(at, name, mechanisms, remedy) for name, mechanisms in picked.apart()])


@computation(lambda at, name, mechanisms, remedy: f"Planting needles ({name}), steps")
def planted_needle(at: Planted, name: str, mechanisms: Mechanisms | None, remedy: remedies.Spec) -> dilution.Needle:
    """The needle's weight for dense (mechanisms None) or one mechanism, on synthetic vectors."""
    return dilution.needle_experiment(dilution.prefix_lengths(at.longest, 10), at.margin, at.noise, mechanisms,
                                      key_at=at.key_at, progress=report, dense=mechanisms is None, remedy=remedy)


def needle(picked: Picked) -> None:
    """A planted needle on synthetic vectors against its exact theory, and a table of the longest n."""
    charts.section("A planted needle",
                   "Synthetic Gaussian queries and keys (no model): the last query's key is planted with a fixed "
                   "logit margin over all other keys, whose logits are Gaussian noise. The same mechanisms and "
                   "parameters as above run at every length; which of them keep the needle as n grows?")
    at = planted()
    found = needles(picked, at)
    log_y = st.checkbox("Log scale for the weight", key=NEEDLE_LOG.key)
    charts.show(st, figs.needle_chart(found, log_y=log_y), key="dilution_chart_needle")
    st.caption("The weight the needle query puts on its key at each length. The dashed lines are the theory: exact "
               "e^margin / (e^margin + n - 1) without noise, and with noise the exact expectation over Gaussian noise "
               "logits (a one-dimensional integral); the cheap plug-in e^(noise²/2) estimate is drawn only where it "
               "is within 5% of the exact value. A hollow marker means the mechanism cannot reach the key at all at "
               "that length; a curve above dense means the mechanism spends less of the query's attention on noise.")
    if picked.remedy:
        without_and_with(st, picked.remedy, figs.needle_lines(found), figs.needle_lines(needles(picked, at,
                                                                                              picked.remedy)),
                         "sequence length n (log)", "weight on the needle key", "dilution_needle_remedy", log_y)
    final = found.frame()
    last = final[final["n"] == found.lengths[-1]].set_index("mechanism")
    dense_w = float(last.loc[DENSE, "weight"])
    summary = last[["weight", "reach"]].assign(**{"vs dense": last["weight"] / dense_w if dense_w else float("nan")})
    st.dataframe(summary.style.format("{:.4g}"))
    st.caption(f"At n = {found.lengths[-1]:,}: the needle's weight, whether the key is reachable, and the weight as a "
               "multiple of dense's. Low-rank weights are signed, so they can be negative.")
    download(final, "Needle weights", "needle.csv", "dilution_csv_needle")


# ---------------------------------------------------------------- attention sinks

@computation("Measuring the first token's share")
def sink_scores(run: Run, threshold: float):
    """Every head's sink score on the layer's first token, as the model computes attention."""
    doc = run.doc
    return sink_measure(doc.q, doc.k, doc.causal, threshold, layer=doc.layer, rows=sample_rows(doc.n, SINK_ROWS),
                        rule=doc.model_rule)


def sinks(picked: Picked) -> None:
    """How much every head leans on the first token, and the sink + window mechanism's maps."""
    run, doc = picked.run, picked.run.doc
    charts.section("Attention sinks", SINKS.summary + " Below: how much every head of this layer already leans on the "
                   "first token, and what the sink + window mechanism keeps of dense attention.")
    threshold = st.slider("Sink threshold (Gu et al.: 0.3)", SINK_THRESHOLD.lo, SINK_THRESHOLD.hi, step=0.05,
                          key=SINK_THRESHOLD.key)
    rows = sample_rows(doc.n, SINK_ROWS)
    measure = sink_scores(run.whole_layer(), threshold)
    charts.show(st, sink_figs.sink_chart(measure), key="dilution_sinks")
    st.caption(f"Per head, the attention the first token receives per query that can see it (Gu et al., ICLR 2025: "
               f"a head has a sink when that exceeds {threshold:g}), as the model computes it "
               f"({doc.model_rule.describe()}), measured on {rows.numel():,} evenly spaced queries. "
               f"{measure.share:.0%} of this layer's {doc.heads} heads have a sink on token 0 "
               f"({plain(doc.labels[0])}).")
    st.markdown(verdict(measure, doc.causal))
    download(measure.frame(), "Sink scores", "sink-scores.csv", "dilution_csv_sinks")
    if SINKS.key in picked.params:  # its form is above, with the other mechanisms'
        params = picked.params[SINKS.key]
    else:
        with st.expander(f"{SINKS.title} parameters"):
            params = forms.checked(SINKS, forms.param_form(SINKS, doc=doc))
    maps.pair(run.of(SINKS.key, params), SINKS.title, maps.zoom(doc.n))
