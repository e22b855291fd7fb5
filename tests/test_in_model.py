"""A mechanism swapped into the model's own layers (explorer.in_model): dense through the swap is the
model's own prediction, mechanisms whose mask depends on positions alone never let a prediction read
later tokens, low rank and encoders are refused in words, and on SmolLM2 (real weights) a window alone
loses what 4 first tokens + the window keep (StreamingLLM's table)."""
import io

import numpy as np
import pytest
import torch

import explorer
from explorer.analysis import in_model as im
from explorer.core.encoding import load_model
from explorer.core.samples import load_sample

STORY = ("The keeper hid the notched key under the third stair. Years later a child found it, turned it over "
         "and over, and wondered which door it had once opened. ")
# position-only masks (each run causal); small sizes, so that every structure bites on a ~70-token text
POSITIONAL = {
    "sinks": {"sinks": 2, "window": 8},
    "segmented": {"segment_length": 8, "overlap": 4, "summaries": True},
    "hierarchical": {"chunk_length": 8, "branching": 2},
    "memory": {"segment": 8, "memory": 8, "compressed": 4, "ratio": 2},
    "relpos": {"kind": "alibi"},
}


@pytest.fixture(scope="module")
def llama(causal_llama):
    """conftest's random-weight Llama causal LM, loaded."""
    return load_model(causal_llama)


@pytest.fixture(scope="module")
def guide():
    """SmolLM2 with its own attention over the first 512 tokens of the bundled field guide."""
    return im.baseline(load_sample("A Field Guide to Reading Long Documents"), "smollm2", max_tokens=512)


def _common(a, b) -> int:
    """How many of the text tokens two baselines share from the start."""
    x, y = a.ids[a.prefix :], b.ids[b.prefix :]
    return next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))


@pytest.mark.parametrize("mechanism", list(POSITIONAL))
def test_no_prediction_reads_a_later_token(llama, mechanism):
    early, late = STORY * 2 + "The door was green.", STORY * 2 + "Nobody ever told the miller."
    a, b = (im.baseline(t, llama) for t in (early, late))
    same = _common(a, b)
    assert 50 < same < min(a.n, b.n)
    ea, eb = (im.swapped(x, mechanism, POSITIONAL[mechanism]) for x in (a, b))
    assert ea.params["causal"] is True
    # predictions made from tokens 0..i (i < same - 1) of their targets inside the common part, equal up to
    # the rounding of matrix products over different lengths
    np.testing.assert_allclose(ea.nll[: same - 1], eb.nll[: same - 1], rtol=1e-6, atol=1e-6)
    assert not np.allclose(ea.nll, ea.nll_dense)  # and the mechanism did change what the model predicts


def test_lsh_sees_the_whole_text_and_says_so(llama):
    """LSH's chunks are sorted over the whole text: a later token moves an earlier prediction (the check
    above would fail for it), and the result says why."""
    a, b = (im.baseline(STORY * 2 + end, llama) for end in ("The door was green.", "Nobody ever told the miller."))
    ea, eb = (im.swapped(x, "lsh", {"n_buckets": 4, "chunk_length": 8}) for x in (a, b))
    same = _common(a, b)
    assert np.abs(ea.nll[: same - 1] - eb.nll[: same - 1]).max() > 1e-3
    assert any("depends on later tokens" in n for n in ea.notes)


def test_dense_through_the_swap_is_the_models_own_prediction(guide):
    lm = load_model("smollm2")
    effect = im.swapped(guide, "dense")
    with torch.no_grad():
        logits = lm.causal_lm(input_ids=torch.tensor([guide.ids])).logits[0, :-1].double()
    own = -torch.log_softmax(logits, -1).gather(1, torch.tensor(guide.ids[1:])[:, None])[:, 0].numpy()
    np.testing.assert_allclose(effect.nll_dense, own, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(effect.nll, own, rtol=1e-4, atol=1e-4)
    assert effect.agree.all() and effect.kl.max() < 1e-6


def test_smollm2_a_window_alone_loses_what_four_first_tokens_keep(guide):
    """StreamingLLM's shape at 512 tokens and a 64-token window (measured: dense 29.0, window alone 72.7,
    4 first tokens + 60 recent 33.7)."""
    alone = im.swapped(guide, "sinks", {"sinks": 0, "window": 64})
    sinks = im.swapped(guide, "sinks", {"sinks": 4, "window": 60})
    whole = im.swapped(guide, "sinks", {"sinks": 4, "window": guide.n})
    dense = sinks.perplexity_dense
    assert alone.perplexity > 1.6 * sinks.perplexity and sinks.perplexity < 1.3 * dense
    assert alone.kl.mean() > 3 * sinks.kl.mean()
    np.testing.assert_allclose(whole.nll, whole.nll_dense, rtol=1e-4, atol=1e-4)
    assert whole.perplexity == pytest.approx(dense, rel=1e-5)
    assert "The first 512 of the text's" in sinks.notes[0]


def test_the_library_call_scores_the_first_tokens_and_reports_by_layer(llama):
    seen = []
    effect = explorer.in_model(STORY, llama, "sinks", {"sinks": 1, "window": 4}, layers=[1], max_tokens=20,
                               progress=lambda done, total: seen.append((done, total)))
    assert len(effect.tokens) == 20 and effect.total_tokens > 20 and effect.nll.shape == effect.kl.shape == (19,)
    assert effect.layers == (1,) and seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert effect.perplexity == pytest.approx(np.exp(effect.nll.mean()))
    assert effect.offsets[0][0] == 0 and STORY[slice(*effect.offsets[-1])] == effect.tokens[-1].lstrip("#")


@pytest.mark.parametrize("call, match", [
    (dict(mechanism="lowrank"), "Low-rank attention has no causal form.*Sink \\+ window"),
    (dict(mechanism="sinks", params={"causal": False}), "causal form"),
    (dict(mechanism="sinks", params={"window": 0}), "window"),
    (dict(mechanism="nope"), "unknown mechanism"),
    (dict(max_tokens=0), "max_tokens=0 must be"),
    (dict(max_tokens=1.5), "whole number"),
    (dict(layers=[7]), "out of range"),
    (dict(text="Key"), "at least 2"),
    (dict(text="   "), "text is empty"),
])
def test_bad_calls_are_refused_in_words(llama, call, match):
    with pytest.raises(ValueError, match=match):
        explorer.in_model(**{"text": STORY, "model": llama, **call})


def test_an_encoder_is_refused_with_smollm2_offered():
    with pytest.raises(ValueError, match="is an encoder.*Pick smollm2"):
        explorer.in_model(STORY, "minilm")


def test_a_sweep_with_in_model_writes_a_table_of_its_own(llama, tmp_path):
    """`--in-model`: each causal LM's perplexity with each mechanism in every layer, in DIR/_in_model; the
    head table reads as before; an encoder is one error row; a second run measures nothing again."""
    from explorer.analysis import corpus
    from explorer.sweep import sweep
    from explorer.sweep.inputs import Document

    doc = Document("keeper", "keeper", STORY * 2)
    options = dict(models=[llama.name, "minilm"], layers=[0], heads=[0], mechanisms=["segmented:segment_length=8"],
                   max_tokens=[40], engine="local", in_model=["sinks:sinks=1,window=6", "lowrank"],
                   stream=io.StringIO())
    sweep([doc], tmp_path, **options)
    heads, swapped = corpus.read(tmp_path), corpus.read_in_model(tmp_path)
    assert set(heads.model) == {llama.name, "minilm"} and (heads.error == "").all()
    mine = swapped[swapped.model == llama.name].set_index("params")
    assert len(mine) == 4  # StreamingLLM's pair, then the two named (not the head table's segmented)
    named = mine.loc['{"causal":true,"sinks":1,"window":6}']
    want = explorer.in_model(STORY * 2, llama, "sinks", {"sinks": 1, "window": 6}, max_tokens=40)
    assert named.perplexity == pytest.approx(want.perplexity, rel=1e-9)
    assert named.tokens == 40 and named.layers == "all 2" and named.error == ""
    assert "no causal form" in mine.loc['{}', "error"]
    assert "is an encoder" in swapped[swapped.model == "minilm"].error.iloc[0]
    boxes = corpus.in_model_summary(swapped)
    assert boxes.loc[("Sinks + window (1 + 6)", llama.name), "times_dense median"] == \
        pytest.approx(want.perplexity / want.perplexity_dense)
    assert ("Window only (256)", llama.name) in boxes.index
    assert sweep([doc], tmp_path, **options).ran == 0 and len(corpus.read_in_model(tmp_path)) == len(swapped)
