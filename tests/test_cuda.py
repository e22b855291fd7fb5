"""On a CUDA machine: every mechanism and the dense pass agree with the CPU and keep
the invariant there. Without a GPU these tests are skipped, as there is nothing to compare."""
import pytest
import torch

import explorer
from explorer.core.stats import attention_stats, reference_stats
from explorer.mechanisms import REGISTRY

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _on(doc, device):
    return (x.to(device) for x in (doc.q, doc.k, doc.v))


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
    for name in ("lse", "entropy", "max_weight", "topk_weight"):
        torch.testing.assert_close(getattr(fast, name), getattr(ref, name), atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(fast.output.cpu(), ref.output, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(fast.map.mean, ref.map.mean, atol=1e-5, rtol=1e-3)
    torch.testing.assert_close(fast.map.max, ref.map.max, atol=1e-5, rtol=1e-3)
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
