"""On a CUDA machine: every mechanism and the dense pass agree with the CPU and keep
the invariant there. Without a GPU these tests are skipped, as there is nothing to compare."""
import pytest
import torch

import explorer
from explorer.core.fused import bin_maps, bin_weights, fused_available, fused_stats, masked_stats
from explorer.core.masks import dense_mask, key_window, sink_window
from explorer.core.pooling import MapAccumulator, bins
from explorer.core.rule import AttentionRule
from explorer.core.segments import fixed
from explorer.core.stats import attention_stats, reference_stats
from explorer.mechanisms import REGISTRY
from explorer.mechanisms.spans import windows

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _on(doc, device):
    return (x.to(device) for x in (doc.q, doc.k, doc.v))


def same_stats(got, ref):
    """A pass on CUDA against one on the CPU, to float32's tolerance."""
    for name in ("lse", "entropy", "max_weight", "topk_weight"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(got.output.cpu(), ref.output, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(got.map.mean, ref.map.mean, atol=1e-5, rtol=1e-3)
    torch.testing.assert_close(got.map.max, ref.map.max, atol=1e-5, rtol=1e-3)


@cuda
@pytest.mark.parametrize("n", [1, 333, 2048])
def test_dense_pass_on_cuda_equals_cpu(n):
    doc = explorer.synthetic(n, heads=2, needles=2 if n > 2 else 0)
    cpu = attention_stats(*_on(doc, "cpu"), grid=64)
    gpu = attention_stats(*_on(doc, "cuda"), grid=64)
    torch.testing.assert_close(gpu.output.cpu(), cpu.output, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(gpu.entropy, cpu.entropy, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(gpu.map.mean, cpu.map.mean, atol=1e-5, rtol=1e-3)


@cuda
@pytest.mark.parametrize("key", list(REGISTRY))
@pytest.mark.parametrize("n", [1, 257, 1500])
def test_mechanism_on_cuda_keeps_the_invariant(key, n):
    doc = explorer.synthetic(n, heads=2, seed=n)
    q, k, v = _on(doc, "cuda")
    res = REGISTRY[key].run(q, k, v)
    assert res.output.device.type == "cuda"
    rows = torch.linspace(0, n - 1, min(n, 16)).long().cuda()
    scale = res.output.abs().max().clamp_min(1.0)
    torch.testing.assert_close(res.weights(rows) @ v, res.output[:, rows], atol=1e-4 * scale, rtol=1e-3)


@cuda
@pytest.mark.parametrize("n", [1, 333, 2048])
@pytest.mark.parametrize("causal", [False, True])
def test_fast_pass_on_cuda_equals_the_reference(n, causal):
    doc = explorer.synthetic(n, heads=2, needles=2 if n > 2 else 0)
    q, k, v = _on(doc, "cuda")
    fast = attention_stats(q, k, v, causal=causal, grid=64, topk=4)
    ref = reference_stats(*_on(doc, "cpu"), causal=causal, grid=64, topk=4)
    same_stats(fast, ref)
    rows = torch.linspace(0, n - 1, min(n, 50)).long().cuda()
    part = attention_stats(q, k, v, causal=causal, grid=64, topk=4, rows=rows)
    torch.testing.assert_close(part.lse, ref.lse[:, rows.cpu()], atol=1e-4, rtol=1e-3)


@cuda
@pytest.mark.parametrize("key,params", [("segmented", {}), ("segmented", {"overlap": 32, "causal": True}),
                                        ("memory", {}), ("memory", {"causal": True})])
def test_block_sparse_fast_paths_on_cuda_equal_cpu(key, params):
    doc = explorer.synthetic(1500, heads=2)
    gpu = REGISTRY[key].run(*_on(doc, "cuda"), **params)
    cpu = REGISTRY[key].run(*_on(doc, "cpu"), **params)
    torch.testing.assert_close(gpu.output.cpu(), cpu.output, atol=1e-4, rtol=1e-3)


@cuda
@pytest.mark.parametrize("n", [333, 2048])
@pytest.mark.parametrize("causal", [False, True])
def test_fused_pass_on_cuda_equals_the_binned_pass(n, causal):
    """FlexAttention's output and lse, the score pass's maps, top-k and entropy, against the CPU's passes."""
    doc = explorer.synthetic(n, heads=2, needles=2)
    q, k, v = _on(doc, "cuda")
    assert fused_available(q, AttentionRule.plain(q.shape[-1], causal))
    fused = fused_stats(q, k, v, causal=causal, grid=64, topk=4)
    ref = reference_stats(*_on(doc, "cpu"), causal=causal, grid=64, topk=4)
    same_stats(fused, ref)
    rows = torch.linspace(0, n - 1, min(n, 50)).long().flip(0).cuda()  # not a multiple of flex's 128-row blocks
    part = fused_stats(q, k, v, causal=causal, grid=64, topk=4, rows=rows)
    torch.testing.assert_close(part.lse, ref.lse[:, rows.cpu()], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(part.output.cpu(), ref.output[:, rows.cpu()], atol=1e-4, rtol=1e-3)


@cuda
@pytest.mark.parametrize("rule", [AttentionRule(0.2, True, window=100, sinks=(1.0, -2.0)),
                                  AttentionRule(0.2, False, softcap=2.0, sinks=(0.0, 3.0))],
                         ids=lambda r: r.describe())
def test_fused_pass_on_cuda_follows_a_models_rule(rule):
    """The sliding window as a block mask, the soft-cap as a score_mod, the sinks outside the kernel."""
    doc = explorer.synthetic(1000, heads=2, needles=2)
    q, k, v = _on(doc, "cuda")
    fused = fused_stats(q, k, v, grid=64, rule=rule)
    ref = attention_stats(*_on(doc, "cpu"), grid=64, rule=rule)
    same_stats(fused, ref)


@cuda
@pytest.mark.parametrize("name", ["sink+window", "segmented"])
def test_masked_stats_from_one_flex_call_equal_the_dense_softmax(name):
    """A block-sparse mechanism's output, lse, max weight and entropy from one FlexAttention call."""
    from torch.nn.attention import flex_attention as fa

    n = 1024 if name == "segmented" else 1500  # key_window indexes its bounds by query: whole blocks
    doc = explorer.synthetic(n, heads=2, needles=2)
    q, k, v = _on(doc, "cuda")
    if name == "segmented":
        lo, hi = windows(fixed(n, 256, "cuda"), n, 0)
        mask = key_window(lo, hi, False)
    else:
        mask = sink_window(4, 64)
    got = masked_stats(q, k, v, mask)
    qd, kd, vd = (x.double() for x in _on(doc, "cpu"))
    s = (qd @ kd.transpose(1, 2) * q.shape[-1] ** -0.5).masked_fill(
        ~dense_mask(mask, torch.arange(n, device="cuda"), n).cpu(), float("-inf"))
    p = torch.softmax(s, -1)
    torch.testing.assert_close(got.lse.cpu().double(), torch.logsumexp(s, -1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.output.cpu().double(), p @ vd, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(got.entropy.cpu().double(), -torch.special.xlogy(p, p).sum(-1), atol=1e-3, rtol=1e-3)
    if hasattr(fa, "AuxRequest"):  # torch with max_scores
        torch.testing.assert_close(got.max_weight.cpu().double(), p.amax(-1), atol=1e-5, rtol=1e-4)


@cuda
def test_bin_weights_from_one_flex_call_are_the_rows_weight_per_display_bin():
    doc = explorer.synthetic(1000, heads=2, needles=2)
    q, k, _ = _on(doc, "cuda")
    got = bin_weights(q, k, 64)
    qd, kd = (x.double() for x in (doc.q, doc.k))
    p = torch.softmax(qd @ kd.transpose(1, 2) * q.shape[-1] ** -0.5, -1)
    key_bin, count = bins(0, 1000, 64)
    want = torch.zeros(2, 1000, count, dtype=torch.float64).index_add_(2, key_bin, p)
    torch.testing.assert_close(got.cpu().double(), want, atol=1e-5, rtol=1e-4)


@cuda
@pytest.mark.parametrize("causal", [False, True])
def test_bin_maps_from_one_flex_call_per_bin_pool_to_the_maps(causal):
    """lse, and both maps pooled from the rows' per-bin sums and maxima, against the reference pass."""
    doc = explorer.synthetic(1000, heads=2, needles=2)
    q, k, _ = _on(doc, "cuda")
    lse, bin_sum, bin_max = bin_maps(q, k, 64, causal)
    ref = reference_stats(*_on(doc, "cpu"), causal=causal, grid=64)
    acc = MapAccumulator(2, (0, 1000), (0, 1000), 64, "cuda")
    acc.add_binned(torch.arange(1000, device="cuda"), bin_sum, bin_max)
    pooled = acc.result()
    torch.testing.assert_close(lse.cpu(), ref.lse, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(pooled.mean, ref.map.mean, atol=1e-5, rtol=1e-3)
    torch.testing.assert_close(pooled.max, ref.map.max, atol=1e-5, rtol=1e-3)
