"""The dense statistics passes (fast and reference) against a brute-force materialized softmax."""
import pytest
import torch

import explorer
from explorer.core.stats import attention_stats, reference_stats
from explorer.mechanisms import REGISTRY


def brute(q, k, v, causal):
    s = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
    if causal:
        n = q.shape[1]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    p = torch.softmax(s, -1)
    ent = -(p * torch.log(p.clamp_min(1e-38))).sum(-1)
    return p, torch.logsumexp(s, -1), ent, p @ v


@pytest.mark.parametrize("n,chunk,grid", [(1, 4, 8), (2, 1, 1), (37, 5, 8), (64, 64, 64), (100, 7, 13), (50, 3, 200)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("stats", [attention_stats, reference_stats])
def test_stats_equal_brute_force(n, chunk, grid, causal, stats):
    d = explorer.synthetic(n, heads=3, head_dim=16, seed=n)
    st = stats(d.q, d.k, d.v, causal=causal, grid=grid, topk=5, chunk=chunk)
    p, lse, ent, out = brute(d.q, d.k, d.v, causal)
    torch.testing.assert_close(st.output, out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(st.lse, lse, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st.entropy, ent, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(st.max_weight, p.amax(-1))
    kk = min(5, n)
    torch.testing.assert_close(st.topk_weight, p.topk(kk, -1).values)
    torch.testing.assert_close(p.gather(-1, st.topk_index), st.topk_weight)
    e = st.map.row_edges
    assert e[0] == 0 and e[-1] == n and len(e) == min(grid, n) + 1
    for i in range(len(e) - 1):
        for j in range(len(e) - 1):
            block = p[:, e[i] : e[i + 1], e[j] : e[j + 1]]
            torch.testing.assert_close(st.map.mean[:, i, j], block.mean((1, 2)), atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(st.map.max[:, i, j], block.amax((1, 2)))


def test_dense_mechanism_and_its_weights():
    d = explorer.synthetic(45, heads=2)
    res = REGISTRY["dense"].run(d.q, d.k, d.v, causal=True)
    p, _, _, out = brute(d.q, d.k, d.v, True)
    torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-4)
    rows = torch.tensor([0, 44, 7])
    torch.testing.assert_close(res.weights(rows), p[:, rows])
    assert res.cost["flops"] == res.cost["dense_flops"] and res.cost["seconds"] >= 0


def test_bad_arguments_raise_value_error():
    d = explorer.synthetic(8)
    with pytest.raises(ValueError, match="grid"):
        attention_stats(d.q, d.k, d.v, grid=0)
    with pytest.raises(ValueError, match="3-D"):
        attention_stats(d.q[0], d.k, d.v)
    with pytest.raises(ValueError, match="share heads and n"):
        attention_stats(d.q, d.k[:, :4], d.v)
    with pytest.raises(ValueError, match="causal"):
        REGISTRY["dense"].run(d.q, d.k, d.v, causal="yes")
    with pytest.raises(ValueError, match="unknown parameter"):
        REGISTRY["dense"].run(d.q, d.k, d.v, window=3)
    with pytest.raises(ValueError, match="rows"):
        REGISTRY["dense"].run(d.q, d.k, d.v).weights(torch.tensor([8]))


def test_needles_have_the_planted_logit_margin():
    d = explorer.synthetic(300, heads=2, head_dim=32, needles=3, margin=6.0, seed=1)
    assert len(d.needles) == 3
    for qi, ki in d.needles:
        logit = (d.q[:, qi] * d.k[:, ki]).sum(-1) / 32**0.5
        torch.testing.assert_close(logit, torch.full_like(logit, 6.0))
        assert qi > ki
    with pytest.raises(ValueError, match="outside"):
        explorer.synthetic(10, needles=[(3, 10)])
    with pytest.raises(ValueError, match="n="):
        explorer.synthetic(0)
