"""The statistics pass on fused kernels (explorer.core.fused) equals the binned pass and the reference
pass on the CPU: every row, subsets and orders of rows, streamed in preview order, a model's rules
(causal, sliding windows, soft-cap, sinks, a position bias), float64, values of another width, several heads, and
sizes that divide neither the chunk, the grid nor the kernel's blocks.

Needs no conftest (the CUDA check runs it with --noconftest, beside tests/test_cuda.py)."""
import pytest
import torch

import explorer
from explorer.core.bias import ALiBi
from explorer.core.fused import fused_available, fused_stats, stream_fused
from explorer.core.rows import preview_first, sample_rows
from explorer.core.stats import attention_stats, by_position, reference_stats

CASES = [(1, None, 8), (2, 1, 1), (37, 5, 8), (100, 7, 13), (300, None, 256), (1031, 128, 256)]
RULES = [explorer.AttentionRule(0.3, True), explorer.AttentionRule(0.25, True, window=9),
         explorer.AttentionRule(0.25, False, window=6), explorer.AttentionRule(0.5, True, softcap=1.5),
         explorer.AttentionRule(0.25, True, window=5, sinks=(1.0, -2.0, 3.0)),
         explorer.AttentionRule(0.25, False, sinks=(0.0, 1.0, 2.0)),
         explorer.AttentionRule(0.25, True, window=8, bias=ALiBi((0.5, 0.25, 0.125)))]


def doc(n, heads=3, head_dim=16):
    return explorer.synthetic(n, heads=heads, head_dim=head_dim, seed=n, needles=2 if n > 4 else 0)


def same_stats(fused, ref, atol=1e-5, map_atol=1e-6):
    for name in ("lse", "entropy", "max_weight", "topk_weight", "output"):
        torch.testing.assert_close(getattr(fused, name), getattr(ref, name), atol=atol, rtol=1e-4)
    for name in ("mean", "max"):
        torch.testing.assert_close(getattr(fused.map, name), getattr(ref.map, name), atol=map_atol, rtol=1e-4,
                                   equal_nan=True)
    assert fused.map.row_edges == ref.map.row_edges and fused.map.col_edges == ref.map.col_edges
    assert fused.map.per_bin == ref.map.per_bin
    assert (fused.rows is None) == (ref.rows is None)


def weights(q, k, causal):
    s = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1)


@pytest.mark.parametrize("n,chunk,grid", CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_fused_pass_equals_the_binned_and_the_reference_pass(n, chunk, grid, causal):
    d = doc(n)
    fused = fused_stats(d.q, d.k, d.v, causal=causal, grid=grid, topk=5, chunk=chunk)
    same_stats(fused, attention_stats(d.q, d.k, d.v, causal=causal, grid=grid, topk=5, chunk=chunk))
    same_stats(fused, reference_stats(d.q, d.k, d.v, causal=causal, grid=grid, topk=5))
    p = weights(d.q, d.k, causal)
    torch.testing.assert_close(p.gather(-1, fused.topk_index), fused.topk_weight)  # the indices name the weights


@pytest.mark.parametrize("n,count,chunk", [(29, 5, 2), (777, 64, 30), (1031, 200, 256)])
@pytest.mark.parametrize("causal", [False, True])
def test_rows_subsets_equal_the_binned_pass(n, count, chunk, causal):
    d = doc(n, heads=2)
    for rows in (sample_rows(n, count), sample_rows(n, count).flip(0)):
        fused = fused_stats(d.q, d.k, d.v, causal=causal, grid=16, topk=4, rows=rows, chunk=chunk)
        assert torch.equal(fused.rows, rows)
        same_stats(fused, attention_stats(d.q, d.k, d.v, causal=causal, grid=16, topk=4, rows=rows))


@pytest.mark.parametrize("causal", [False, True])
def test_a_stream_in_preview_order_shows_the_sample_first_and_ends_exact(causal):
    d = doc(300, heads=2)
    parts = [by_position(acc.result()) for _, acc in stream_fused(d.q, d.k, d.v, causal=causal, grid=16,
                                                                   rows=preview_first(300, 40), chunk=40)]
    sample = sample_rows(300, 40)
    same_stats(parts[0], attention_stats(d.q, d.k, d.v, causal=causal, grid=16, rows=sample))
    same_stats(parts[-1], reference_stats(d.q, d.k, d.v, causal=causal, grid=16))
    assert parts[-1].rows is None and len(parts) == 8


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.describe())
@pytest.mark.parametrize("n,chunk,grid", [(37, 5, 8), (300, None, 64)])
def test_a_models_rule_gives_the_statistics_of_both_passes(rule, n, chunk, grid):
    d = doc(n)
    fused = fused_stats(d.q, d.k, d.v, grid=grid, chunk=chunk, rule=rule)
    same_stats(fused, attention_stats(d.q, d.k, d.v, grid=grid, chunk=chunk, rule=rule))
    same_stats(fused, reference_stats(d.q, d.k, d.v, grid=grid, rule=rule))
    rows = sample_rows(n, 7)
    same_stats(fused_stats(d.q, d.k, d.v, grid=grid, rows=rows, rule=rule),
               attention_stats(d.q, d.k, d.v, grid=grid, rows=rows, rule=rule))


def test_the_cpu_kernel_serves_every_rule_but_a_soft_cap_or_a_position_bias():
    q = torch.zeros(1, 4, 16)
    assert [fused_available(q, rule) for rule in RULES] == [rule.dot_scores for rule in RULES]


@pytest.mark.parametrize("rule", [None, *RULES[1:3], RULES[4]], ids=lambda r: r.describe() if r else "plain")
def test_float64_is_computed_in_float64(rule):
    d = doc(90)
    q, k, v = (x.double() for x in (d.q, d.k, d.v))
    fused = fused_stats(q, k, v, grid=16, chunk=7, rule=rule)
    ref = reference_stats(q, k, v, grid=16, rule=rule)
    assert fused.lse.dtype == fused.output.dtype == torch.float64
    for name in ("lse", "entropy", "max_weight", "topk_weight", "output"):
        torch.testing.assert_close(getattr(fused, name), getattr(ref, name), atol=1e-11, rtol=1e-10)


def test_values_of_another_width():
    d = doc(200, heads=2, head_dim=16)
    v = torch.randn(2, 200, 24, generator=torch.Generator().manual_seed(1))
    for causal in (False, True):
        fused = fused_stats(d.q, d.k, v, causal=causal, grid=32, chunk=64)
        assert fused.output.shape == (2, 200, 24)
        same_stats(fused, reference_stats(d.q, d.k, v, causal=causal, grid=32))
        v8 = v[..., :8].contiguous()
        torch.testing.assert_close(fused_stats(d.q, d.k, v8, causal=causal).output, weights(d.q, d.k, causal) @ v8,
                                   atol=1e-5, rtol=1e-4)


def test_bad_arguments_are_refused_as_in_the_binned_pass():
    d = doc(20, heads=1)
    with pytest.raises(ValueError, match="rows"):
        fused_stats(d.q, d.k, d.v, rows=torch.tensor([20]))
    with pytest.raises(ValueError, match="at least one"):
        fused_stats(d.q, d.k, d.v, rows=torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="grid"):
        stream_fused(d.q, d.k, d.v, grid=0)
