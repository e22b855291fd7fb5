"""The fast statistics pass equals the reference pass and a brute-force softmax: every row,
subsets of rows, streamed blocks; causal or not; sizes that divide neither chunk nor grid."""
from dataclasses import replace

import pytest
import torch

import explorer
from explorer.core.bias import ALiBi, RelativeBuckets
from explorer.core.rows import sample_rows
from explorer.core.stats import attention_stats, reference_stats, stream_stats

CASES = [(1, None, 8), (2, 1, 1), (37, 5, 8), (64, 64, 64), (100, 7, 13), (50, 3, 200), (300, None, 256),
         (1031, 128, 256)]


def doc(n, heads=3, head_dim=16):
    return explorer.synthetic(n, heads=heads, head_dim=head_dim, seed=n, needles=2 if n > 4 else 0)


def close(a, b, **tol):
    torch.testing.assert_close(a, b, **(tol or {"atol": 1e-5, "rtol": 1e-4}))


def same_stats(fast, ref):
    for name in ("lse", "entropy", "max_weight", "topk_weight", "output"):
        close(getattr(fast, name), getattr(ref, name), atol=1e-5, rtol=1e-4)
    close(fast.map.mean, ref.map.mean, atol=1e-6, rtol=1e-4)
    close(fast.map.max, ref.map.max, atol=1e-6, rtol=1e-4)
    assert fast.map.row_edges == ref.map.row_edges and fast.map.col_edges == ref.map.col_edges


def brute(q, k, causal):
    s = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
    if causal:
        n = q.shape[1]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1), torch.logsumexp(s, -1)


@pytest.mark.parametrize("n,chunk,grid", CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_fast_pass_equals_reference(n, chunk, grid, causal, reduced):
    d = doc(n)
    fast = attention_stats(d.q, d.k, d.v, causal=causal, grid=grid, topk=5, chunk=chunk)
    ref = reference_stats(d.q, d.k, d.v, causal=causal, grid=grid, topk=5, chunk=chunk)
    same_stats(fast, ref)
    assert fast.rows is None and fast.map.per_bin is None
    p, _ = brute(d.q, d.k, causal)
    close(p.gather(-1, fast.topk_index), fast.topk_weight)  # the indices name the weights reported


def brute_rows(q, k, v, rows, causal, grid):
    """Brute-force statistics of the listed rows, and their map pooled over the display bins."""
    p, lse = brute(q, k, causal)
    p, lse = p[:, rows], lse[:, rows]
    ent = -(p * torch.log(p.clamp_min(1e-38))).sum(-1)
    n = q.shape[1]
    edges = explorer.core.pooling.edges(0, n, grid)
    rbin = torch.bucketize(rows, torch.tensor(edges[1:-1]), right=True)
    nb = len(edges) - 1
    mean = torch.full((q.shape[0], nb, nb), float("nan"))
    peak = mean.clone()
    for i in range(nb):
        mine = p[:, rbin == i]
        if mine.shape[1]:
            for j in range(nb):
                block = mine[:, :, edges[j] : edges[j + 1]]
                mean[:, i, j], peak[:, i, j] = block.mean((1, 2)), block.amax((1, 2))
    return p, lse, ent, p @ v, mean, peak


@pytest.mark.parametrize("n,count,grid", [(1, 1, 4), (29, 5, 8), (200, 40, 16), (777, 64, 64)])
@pytest.mark.parametrize("causal", [False, True])
def test_rows_subset_equals_brute_force(n, count, grid, causal):
    d = doc(n, heads=2)
    rows = sample_rows(n, count)
    st = attention_stats(d.q, d.k, d.v, causal=causal, grid=grid, topk=4, rows=rows, chunk=7)
    p, lse, ent, out, mean, peak = brute_rows(d.q, d.k, d.v, rows, causal, grid)
    assert torch.equal(st.rows, rows)
    close(st.lse, lse)
    close(st.entropy, ent, atol=1e-4, rtol=1e-4)
    close(st.max_weight, p.amax(-1))
    close(st.topk_weight, p.topk(min(4, n), -1).values)
    close(p.gather(-1, st.topk_index), st.topk_weight)
    close(st.output, out)
    close(st.map.mean, mean, atol=1e-6, rtol=1e-4, equal_nan=True)
    close(st.map.max, peak, atol=1e-6, rtol=1e-4, equal_nan=True)


def test_rows_in_any_order_record_their_sampling():
    d = doc(90, heads=1)
    rows = torch.tensor([80, 3, 41, 3])
    st = attention_stats(d.q, d.k, d.v, rows=rows, grid=9)
    full = attention_stats(d.q, d.k, d.v, grid=9)
    assert torch.equal(st.rows, rows)
    close(st.lse, full.lse[:, rows])
    close(st.output, full.output[:, rows])
    assert torch.equal(st.topk_index, full.topk_index[:, rows])
    assert st.map.per_bin == 2  # row 3 was listed twice, in the first row bin


def test_stream_yields_growing_prefixes_then_the_full_result():
    d = doc(100, heads=2)
    seen = []
    for done, acc in stream_stats(d.q, d.k, d.v, causal=True, grid=10, chunk=30):
        part = acc.result()
        seen.append(done)
        assert part.lse.shape == (2, done) and (done == 100 or torch.equal(part.rows, torch.arange(done)))
        filled = done // 10  # row bins of 10 rows each
        assert not part.map.mean[:, :filled].isnan().any() and part.map.mean[:, filled + 1:].isnan().all()
    assert seen == [30, 60, 90, 100]
    same_stats(part, reference_stats(d.q, d.k, d.v, causal=True, grid=10))
    assert part.rows is None


def test_progress_and_bad_rows():
    d = doc(20, heads=1)
    calls = []
    attention_stats(d.q, d.k, d.v, chunk=8, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(8, 20), (16, 20), (20, 20)]
    with pytest.raises(ValueError, match="rows"):
        attention_stats(d.q, d.k, d.v, rows=torch.tensor([20]))
    with pytest.raises(ValueError, match="at least one"):
        attention_stats(d.q, d.k, d.v, rows=torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="topk"):
        attention_stats(d.q, d.k, d.v, topk=0)


def test_stream_leaves_the_callers_grad_mode_alone():
    d = doc(50, heads=1)
    for _, acc in stream_stats(d.q, d.k, d.v, chunk=20):
        assert torch.is_grad_enabled()
    assert not acc.out.requires_grad


def test_stream_checks_its_arguments_at_the_call():
    d = doc(10, heads=1)
    with pytest.raises(ValueError, match="grid"):
        stream_stats(d.q, d.k, d.v, grid=0)


@pytest.mark.parametrize("causal", [False, True])
def test_accelerator_blocks_of_every_head_equal_the_cpu_ones(monkeypatch, causal):
    """On CUDA a block holds every head (stats_chunk); the same code on the CPU gives the same numbers."""
    from explorer.core import stats

    d = doc(333, heads=3)
    cpu = attention_stats(d.q, d.k, d.v, causal=causal, grid=32)
    monkeypatch.setattr(stats, "stats_chunk", lambda n, heads, device: (50, heads))
    every = attention_stats(d.q, d.k, d.v, causal=causal, grid=32)
    assert every.chunk == 50
    same_stats(every, cpu)
    p, _ = brute(d.q, d.k, causal)
    close(p.gather(-1, every.topk_index), every.topk_weight)  # ties (zero weights) may name other keys


@pytest.mark.parametrize("causal", [False, True])
def test_a_pass_in_preview_order_shows_the_sample_first_and_ends_exact(causal):
    from explorer.core.rows import preview_first
    from explorer.core.stats import by_position

    d = doc(300, heads=2)
    order = preview_first(300, 40)
    assert sorted(order.tolist()) == list(range(300))
    sample = sample_rows(300, 40)
    parts = [by_position(acc.result()) for _, acc in stream_stats(d.q, d.k, d.v, causal=causal, grid=16,
                                                                   rows=order, chunk=40)]
    first = attention_stats(d.q, d.k, d.v, causal=causal, grid=16, rows=sample)
    assert torch.equal(parts[0].rows, sample)
    same_stats(parts[0], first)  # the first block is exactly the evenly spaced preview
    assert not parts[0].map.mean.isnan().any()  # and reaches every row bin
    middle = parts[3]
    assert torch.equal(middle.rows, middle.rows.sort().values) and middle.rows.numel() == 160
    same_stats(parts[-1], reference_stats(d.q, d.k, d.v, causal=causal, grid=16))
    assert parts[-1].rows is None and parts[-1].map.per_bin is None


TABLE = tuple(map(tuple, torch.randn(3, 16, generator=torch.Generator().manual_seed(3)).tolist()))
RULES = [explorer.AttentionRule(0.3, True), explorer.AttentionRule(0.25, True, window=9),
         explorer.AttentionRule(0.25, False, window=6), explorer.AttentionRule(0.5, True, softcap=1.5),
         explorer.AttentionRule(0.25, True, window=5, sinks=(1.0, -2.0, 3.0)),
         explorer.AttentionRule(0.25, False, softcap=2.0, sinks=(0.0, 1.0, 2.0)),
         explorer.AttentionRule(0.25, True, window=7, bias=ALiBi((0.5, 0.25, 0.0625), scale=0.5),
                                sinks=(1.0, 0.0, -1.0)),
         explorer.AttentionRule(0.25, False, bias=ALiBi((0.5, 0.125, 0.03125))),
         explorer.AttentionRule(0.3, False, softcap=2.0, bias=RelativeBuckets(TABLE, max_distance=20)),
         explorer.AttentionRule(0.3, True, bias=RelativeBuckets(TABLE, max_distance=20, bidirectional=False))]


def brute_bias(bias, n):
    """A position bias [heads, n, n] by its closed form: ALiBi's scale * slope * (j - i), or the table at
    T5's own bucket of j - i (transformers' T5Attention, a second implementation)."""
    from transformers.models.t5.modeling_t5 import T5Attention

    distance = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    if isinstance(bias, ALiBi):
        return bias.scale * torch.tensor(bias.slopes)[:, None, None] * distance
    buckets = T5Attention._relative_position_bucket(distance, bias.bidirectional, bias.num_buckets, bias.max_distance)
    return torch.tensor(bias.table)[:, buckets]


def brute_rule(q, k, rule):
    """The rule written out on the full n x n matrix: scale, soft-cap, bias, mask, a sink slot per head."""
    n = q.shape[1]
    s = q @ k.transpose(1, 2) * rule.scaling
    if rule.softcap:
        s = rule.softcap * torch.tanh(s / rule.softcap)
    if rule.bias:
        s = s + brute_bias(rule.bias, n).to(s.dtype)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None]
    ok = (j <= i) if rule.causal else torch.ones(n, n, dtype=torch.bool)
    if rule.window:
        ok &= (i - j < rule.window) if rule.causal else ((i - j).abs() <= rule.window)
    s = s.masked_fill(~ok, float("-inf"))
    sink = torch.tensor(rule.sinks or [float("-inf")] * q.shape[0]).view(-1, 1, 1).expand(-1, n, 1)
    full = torch.softmax(torch.cat([s, sink], -1), -1)
    return full[..., :-1], torch.logsumexp(torch.cat([s, sink], -1), -1), -torch.special.xlogy(full, full).sum(-1)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.describe())
@pytest.mark.parametrize("n,chunk,grid", [(37, 5, 8), (300, None, 64)])
def test_a_models_rule_gives_the_same_statistics_in_both_passes_and_by_brute_force(rule, n, chunk, grid, reduced):
    d = doc(n)
    fast = attention_stats(d.q, d.k, d.v, grid=grid, chunk=chunk, rule=rule)
    same_stats(fast, reference_stats(d.q, d.k, d.v, grid=grid, rule=rule))
    p, lse, entropy = brute_rule(d.q, d.k, rule)
    close(fast.lse, lse)
    close(fast.entropy, entropy)
    close(fast.output, p @ d.v)
    close(fast.max_weight, p.amax(-1))
    close(explorer.model_attention(replace(d, rule=rule), torch.arange(n)), p)
    rows = sample_rows(n, 7)
    part = attention_stats(d.q, d.k, d.v, grid=grid, rows=rows, rule=rule)
    close(part.entropy, entropy[:, rows])


@pytest.mark.parametrize("rule", RULES[1:5], ids=lambda r: r.describe())
def test_a_models_rule_in_float64(rule):
    d = doc(90)
    q, k, v = (x.double() for x in (d.q, d.k, d.v))
    fast = attention_stats(q, k, v, grid=16, chunk=7, rule=rule)
    p, lse, entropy = brute_rule(q, k, rule)
    close(fast.lse.double(), lse)
    close(fast.entropy.double(), entropy)
    close(fast.output, p @ v)
