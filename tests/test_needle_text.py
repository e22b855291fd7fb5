"""Real-text dilution: spans found by their marked strings, the built sequences and the question's mass
on the passage against brute force on a tiny hand-made case, mechanisms, remedies, validation."""
import re

import numpy as np
import pytest
import torch

import explorer
from explorer.analysis.experiment import DENSE
from explorer.analysis.needle_text import (TextNeedle, filler_pool, filler_steps, find_span, marked_spans,
                                           needle_report_spans, sequence, text_dilution)
from explorer.core.samples import SAMPLES_DIR
from explorer.mechanisms import REGISTRY

REPORT = (SAMPLES_DIR / "needle_report.md").read_text(encoding="utf-8")


def words(text: str) -> list[tuple[int, int]]:
    """Whitespace tokens' character offsets: a tokenisation independent of any model."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def spanned(text, offsets, span) -> str:
    return text[offsets[span[0]][0] : offsets[span[1] - 1][1]]


# ---------------------------------------------------------------- spans

def test_needle_report_spans_mark_the_planted_fact_and_the_later_question():
    offsets = words(REPORT)
    passage, question = needle_report_spans(REPORT, offsets)
    assert spanned(REPORT, offsets, passage) == ("**Access code for the cold archive:** the archive is protected by a "
                                                 "keypad and a software lock, and the access code for the archive "
                                                 "is VERMILION-42.")
    assert spanned(REPORT, offsets, question) == "What is the access code for the cold archive?"
    assert passage[1] < question[0]


def test_needle_report_spans_in_the_bundled_models_tokens():
    from explorer.core.encoding import load_model

    tok = load_model("minilm").tokenizer
    enc = tok(REPORT, return_offsets_mapping=True, add_special_tokens=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    passage, question = needle_report_spans(REPORT, offsets)
    assert "VERMILION-42." in spanned(REPORT, offsets, passage)
    assert spanned(REPORT, offsets, question) == "What is the access code for the cold archive?"
    assert offsets[0] == (0, 0) and 0 not in range(*passage)  # [CLS] is no part of either


def test_find_span_by_marked_strings():
    text = "alpha beta gamma. delta epsilon beta gamma."
    offsets = words(text)
    assert find_span(text, offsets, "beta") == (1, 2)
    assert find_span(text, offsets, "beta", "delta") == (1, 4)
    assert find_span(text, offsets, "beta", after=10) == (5, 6)
    assert find_span(text, offsets, "amm") == (2, 3)  # a token partly inside counts
    assert marked_spans(text, offsets, ("alpha", "beta"), ("beta gamma", None)) == ((0, 2), (5, 7))
    for args, match in ((("zeta",), "does not occur"), (("beta", "zeta"), "does not occur after"),
                        (("beta",), "after character 40")):
        with pytest.raises(ValueError, match=match):
            find_span(text, offsets, *args, after=40 if "after character" in match else 0)


# ---------------------------------------------------------------- sequences

OFFSETS = [(0, 0)] + [(3 * i, 3 * i + 2) for i in range(1, 12)]  # a special token, then 11 text tokens
PASSAGE, QUESTION = (2, 4), (9, 11)


def test_filler_pool_reads_on_from_the_passage_and_wraps_without_special_tokens():
    pool = filler_pool(OFFSETS, PASSAGE, QUESTION).tolist()
    assert pool == [4, 5, 6, 7, 8, 11, 1]
    assert sequence(PASSAGE, QUESTION, torch.tensor(pool), 3).tolist() == [2, 3, 4, 5, 6, 9, 10]
    assert filler_steps(7, 10) == [0, 7] and filler_steps(0) == [0]
    steps = filler_steps(5000, 10)
    assert steps[0] == 0 and steps[1] == 8 and steps[-1] == 5000 and len(steps) <= 10


def brute_mass(q, k, order, plen, qlen, causal, scale=None):
    """Mass of each question row on the passage, from the full score matrix of the ordered tokens."""
    q, k = q[:, order].double().numpy(), k[:, order].double().numpy()
    if scale is not None:
        q = q * scale[None, :, None]
    s = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    n = len(order)
    if causal:
        s = np.where(np.arange(n)[None, None] > np.arange(n)[None, :, None], -np.inf, s)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return w[:, n - qlen :, :plen].sum(-1)


@pytest.mark.parametrize("causal", [False, True])
def test_mass_on_the_passage_matches_brute_force(causal):
    d = explorer.synthetic(12, heads=2, head_dim=8, seed=3, noise=2.0)
    got = text_dilution(d.q, d.k, d.v, OFFSETS, PASSAGE, QUESTION, fillers=[0, 3, 7], causal=causal,
                        mechanisms={"Dense mechanism": (REGISTRY["dense"], {})})
    orders = {0: [2, 3, 9, 10], 3: [2, 3, 4, 5, 6, 9, 10], 7: [2, 3, 4, 5, 6, 7, 8, 11, 1, 9, 10]}
    assert got.fillers == [0, 3, 7] and got.lengths == [4, 7, 11]
    for i, order in enumerate(orders.values()):
        want = brute_mass(d.q, d.k, order, 2, 2, causal)
        for name in (DENSE, "Dense mechanism"):
            np.testing.assert_allclose(got.mass[name][i], want, rtol=1e-5, atol=1e-7)
        n = len(order)
        seen = np.array([n - 1, n]) if causal else np.array([n, n])
        assert got.uniform[i] == pytest.approx(float((2 / seen).mean()))
    assert got.causal == {DENSE: causal, "Dense mechanism": causal}
    np.testing.assert_allclose(got.mean(DENSE), got.mass[DENSE].reshape(3, -1).mean(1))
    frame = got.frame()
    assert len(frame) == 6 and list(frame.columns[:4]) == ["mechanism", "distance", "n", "mass"]
    assert (frame["q25"] <= frame["median"]).all() and (frame["median"] <= frame["q75"]).all()


def test_remedy_rescales_the_built_sequences_queries():
    d = explorer.synthetic(12, heads=1, head_dim=8, seed=5, noise=1.5)
    got = text_dilution(d.q, d.k, d.v, OFFSETS, PASSAGE, QUESTION, fillers=[3], causal=True,
                        remedy=("ssmax", {"s": 0.5}))
    order = [2, 3, 4, 5, 6, 9, 10]
    want = brute_mass(d.q, d.k, order, 2, 2, True, scale=0.5 * np.log(np.arange(1, 8)))
    np.testing.assert_allclose(got.mass[DENSE][0], want, rtol=1e-5, atol=1e-7)
    assert got.remedy == ("ssmax", {"s": 0.5})


def test_mechanisms_on_the_built_sequences():
    d = explorer.synthetic(400, heads=2, head_dim=8, seed=1)
    offsets = [(2 * i, 2 * i + 1) for i in range(400)]
    mechs = {"seg": (REGISTRY["segmented"], {"segment_length": 16}),
             "sinks": (REGISTRY["sinks"], {"sinks": 0, "window": 64, "causal": False})}
    got = text_dilution(d.q, d.k, d.v, offsets, (10, 14), (390, 394), fillers=[0, 8, 300], mechanisms=mechs)
    for name in mechs:  # with the passage next to the question both see it as dense does, at any distance not
        np.testing.assert_allclose(got.mass[name][0], got.mass[DENSE][0], rtol=1e-5)
        assert (got.mass[name][2] == 0).all() and (got.mass[DENSE][2] > 0).all()
    assert got.causal == {DENSE: False, "seg": False, "sinks": False}
    merged = TextNeedle.merge(text_dilution(d.q, d.k, d.v, offsets, (10, 14), (390, 394), fillers=[0, 8, 300]),
                              text_dilution(d.q, d.k, d.v, offsets, (10, 14), (390, 394), fillers=[0, 8, 300],
                                            mechanisms=mechs, dense=False))
    assert list(merged.mass) == [DENSE, "seg", "sinks"]
    for name in merged.mass:
        np.testing.assert_array_equal(merged.mass[name], got.mass[name])
    with pytest.raises(ValueError, match="different fillers"):
        TextNeedle.merge(got, text_dilution(d.q, d.k, d.v, offsets, (10, 14), (390, 394), fillers=[0, 8]))


def test_bad_arguments_raise_value_errors():
    d = explorer.synthetic(12, heads=1)
    q, k, v = d.q, d.k, d.v
    cases = [
        (lambda: text_dilution(q, k, v, OFFSETS[:5], PASSAGE, QUESTION), "offsets has 5 entries"),
        (lambda: text_dilution(q, k, v, OFFSETS, (4, 4), QUESTION), "passage span"),
        (lambda: text_dilution(q, k, v, OFFSETS, PASSAGE, (9, 13)), "question span"),
        (lambda: text_dilution(q, k, v, OFFSETS, QUESTION, PASSAGE), "must end before"),
        (lambda: text_dilution(q, k, v, OFFSETS, PASSAGE, QUESTION, fillers=[8]), "each in 0..7"),
        (lambda: text_dilution(q, k, v, OFFSETS, PASSAGE, QUESTION, fillers=[]), "at least one"),
        (lambda: text_dilution(q, k, v, OFFSETS, PASSAGE, QUESTION, fillers=[1.5]), "filler=1.5"),
        (lambda: text_dilution(q, k, v, OFFSETS, PASSAGE, QUESTION, remedy=("x", {})), "remedy='x'"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
