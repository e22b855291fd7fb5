"""Block-sparse fast paths equal the reference loops: segmented and Transformer-XL memory through
one batched SDPA; masks as pure functions, dense and as FlexAttention block masks."""
import pytest
import torch

import explorer
from explorer.core import segments
from explorer.core.masks import block_mask, dense_mask, key_window, sink_window
from explorer.core.windows import segment_attention
from explorer.mechanisms import REGISTRY
from explorer.mechanisms.memory import segment_layout, segment_loop, slot_means
from explorer.mechanisms.spans import SpanAttention, make_starts, windows


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n,length,overlap,boundaries", [
    (1, 128, 0, None), (129, 128, 0, None), (300, 37, 5, None), (256, 64, 64, None), (100, 7, 200, None),
    (60, 128, 0, [0, 10, 25, 26, 40]), (90, 128, 3, [0, 1, 2, 3, 4, 80])])
@pytest.mark.parametrize("causal", [False, True])
def test_segmented_fast_path_equals_the_row_loop(n, length, overlap, boundaries, causal):
    d = explorer.synthetic(n, heads=2, seed=n)
    res = REGISTRY["segmented"].run(d.q, d.k, d.v, segment_length=length, overlap=overlap, causal=causal,
                                    boundaries=boundaries)
    starts = make_starts(n, length, boundaries, d.q.device)
    lo, hi = windows(starts, n, overlap)
    ref = SpanAttention(d.q, d.k, d.v, lo, hi, causal, [])
    out, _ = ref.run(16)
    close(res.output, out)
    assert res.cost["flops"] == ref.flops  # the same pairs counted, however computed
    rows = torch.arange(n)
    close(res.weights(rows) @ d.v, res.output)


def test_segment_attention_counts_pairs_and_declines_uneven_segments():
    d = explorer.synthetic(90, heads=1)
    starts = torch.tensor([0, 1, 2, 3, 4, 5])  # one long segment: padding would multiply the work
    assert segment_attention(d.q, d.k, d.v, starts, starts, segments.ends(starts, 90), False) is None
    starts = segments.fixed(90, 30)
    lo, hi = windows(starts, 90, 10)
    _, pairs = segment_attention(d.q, d.k, d.v, starts, lo[starts], hi[starts], True)
    assert pairs == int(dense_mask(key_window(lo, hi, True), torch.arange(90), 90).sum())


@pytest.mark.parametrize("n,segment,memory", [(1, 128, 128), (500, 128, 128), (333, 50, 17), (64, 10, 0),
                                              (40, 100, 5)])
@pytest.mark.parametrize("causal", [False, True])
def test_memory_fast_path_equals_the_segment_loop(n, segment, memory, causal):
    d = explorer.synthetic(n, heads=2, seed=n)
    res = REGISTRY["memory"].run(d.q, d.k, d.v, segment=segment, memory=memory, causal=causal)
    segment = min(segment, n)
    lay = segment_layout(n, segment, memory, 0, 4)
    empty = d.k[:, :0]
    close(res.output, segment_loop(d.q, d.k, d.v, lay, empty, empty, causal))
    rows = torch.linspace(0, n - 1, min(n, 20)).long()
    close(res.weights(rows) @ d.v, res.output[:, rows])


def test_memory_with_compressed_slots_keeps_the_loop():
    d = explorer.synthetic(400, heads=1)
    res = REGISTRY["memory"].run(d.q, d.k, d.v, segment=64, memory=64, compressed=8, ratio=4)
    lay = segment_layout(400, 64, 64, 8, 4)
    slots = lay.slot_spans
    close(res.output, segment_loop(d.q, d.k, d.v, lay, slot_means(d.k, slots), slot_means(d.v, slots), False))


def test_sink_window_mask():
    rows = torch.arange(40)
    got = dense_mask(sink_window(3, 5), rows, 40)
    i, j = rows[:, None], torch.arange(40)[None]
    assert torch.equal(got, (j <= i) & ((j < 3) | (j > i - 5)))
    assert got.sum(1).tolist()[:8] == [1, 2, 3, 4, 5, 6, 7, 8] and got[39].sum() == 8
    with pytest.raises(ValueError, match="window"):
        sink_window(2, 0)


def test_key_window_mask_is_segmented_reach():
    n = 70
    starts = segments.fixed(n, 16)
    lo, hi = windows(starts, n, 4)
    res = REGISTRY["segmented"].run(*explorer.synthetic(n, heads=1).head(0), segment_length=16, overlap=4,
                                    causal=True)
    rows = torch.arange(n)
    assert torch.equal(dense_mask(key_window(lo, hi, True), rows, n), res.reach(rows)[0])


def test_block_mask_keeps_every_block_a_mask_reaches():
    n, block = 300, 64
    mask = sink_window(4, 70)
    blocks = block_mask(mask, n, "cpu", block=block).to_dense()[0, 0].bool()
    dense = dense_mask(mask, torch.arange(n), n)
    padded = torch.zeros(blocks.shape[0] * block, blocks.shape[1] * block, dtype=torch.bool)
    padded[:n, :n] = dense
    reached = padded.view(blocks.shape[0], block, blocks.shape[1], block).any(3).any(1)
    assert torch.equal(blocks, reached)
