"""LSH attention (Reformer): against transformers' own LSHSelfAttention and a brute-force reference."""
from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer
from explorer.analysis.lsh import chunk_starts, chunk_windows, seed_recall, sorted_dense_map, topk_caught
from explorer.core import attention
from explorer.mechanisms import REGISTRY

os.environ.setdefault("HF_HUB_OFFLINE", "1")
LSH = REGISTRY["lsh"]


# ---------------------------------------------------------------- transformers' Reformer as reference

def reformer(n, heads, d, rounds, n_buckets, chunk, seed, causal, dtype=torch.float32):
    """transformers' LSHSelfAttention with random weights: (its output, buckets, its qk and v per head)."""
    from transformers import ReformerConfig
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention

    cfg = ReformerConfig(hidden_size=heads * d, num_attention_heads=heads, attention_head_size=d,
                         num_hashes=rounds, num_buckets=n_buckets, lsh_attn_chunk_length=chunk,
                         lsh_num_chunks_before=1, lsh_num_chunks_after=0, hash_seed=seed, is_decoder=causal,
                         lsh_attention_probs_dropout_prob=0.0, attn_layers=["lsh"])
    torch.manual_seed(1000 + n)
    att = LSHSelfAttention(cfg).eval().to(dtype)
    hidden = torch.randn(1, n, heads * d, dtype=dtype)
    with torch.no_grad():
        res = att(hidden)
        qk = att._split_hidden_size_dim(att.query_key(hidden), heads, d)[0]
        v = att._split_hidden_size_dim(att.value(hidden), heads, d)[0]
    out = res.hidden_states[0].view(n, heads, d).transpose(0, 1)  # [heads, n, d]
    buckets = None
    if res.buckets is not None:  # [heads, rounds, n] with round offsets r * n_buckets
        buckets = res.buckets[0] - (torch.arange(rounds) * n_buckets)[None, :, None]
    return out, buckets, qk, v


CASES = [  # n, heads, d, rounds, n_buckets, chunk, seed
    (64, 2, 16, 3, 8, 8, 1),
    (60, 3, 8, 1, 4, 5, 7),
    (48, 1, 8, 2, 6, 16, 2),
    (32, 2, 4, 4, 2, 4, 3),
]


@pytest.mark.parametrize("case", CASES)
def test_buckets_and_output_match_transformers(case):
    """Same seed -> same rotations as transformers draws; buckets exact, output to float32 precision."""
    n, heads, d, rounds, n_buckets, chunk, seed = case
    out, buckets, qk, v = reformer(n, heads, d, rounds, n_buckets, chunk, seed, causal=False)
    res = LSH.run(qk, torch.randn_like(qk), v, n_buckets=n_buckets, n_rounds=rounds, chunk_length=chunk,
                  seed=seed, shared_qk=True)
    assert torch.equal(res.structure.buckets, buckets.transpose(0, 1))
    assert torch.allclose(res.output, out, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_output_matches_transformers_float64_explicit_rotations(case, causal):
    """In float64 with the rotations passed explicitly, the decoder (causal) form matches exactly too.

    (In float32 the causal rows whose only key in a round is themselves differ by
    up to ~1%: transformers normalizes by exp(s - lse) with lse near -1e5, where
    float32 spacing is 0.008; this module divides by the sum instead.)
    """
    n, heads, d, rounds, n_buckets, chunk, seed = case
    out, buckets, qk, v = reformer(n, heads, d, rounds, n_buckets, chunk, seed, causal, torch.float64)
    torch.manual_seed(seed)
    rotations = torch.randn(heads, d, rounds, n_buckets // 2, dtype=torch.float64)  # as transformers draws them
    res = LSH.run(qk, qk, v, n_buckets=n_buckets, n_rounds=rounds, chunk_length=chunk, shared_qk=True,
                  causal=causal, rotations=rotations)
    assert torch.equal(res.structure.buckets, buckets.transpose(0, 1))
    assert torch.allclose(res.output, out, atol=1e-10)


@pytest.mark.parametrize("n,chunk", [(10, 16), (8, 8), (1, 4)])
@pytest.mark.parametrize("causal", [False, True])
def test_short_input_matches_transformers_full_attention(n, chunk, causal):
    """n <= chunk_length: transformers falls back to full attention with the self mask; so does the clamp."""
    out, _, qk, v = reformer(n, 2, 8, 2, 4, chunk, 5, causal, torch.float64)
    res = LSH.run(qk, qk, v, n_buckets=4, n_rounds=2, chunk_length=chunk, seed=5, shared_qk=True, causal=causal)
    assert torch.allclose(res.output, out, atol=1e-10)
    assert res.structure.chunk_length == n


# ---------------------------------------------------------------- brute-force reference from the buckets

def reference_weights(q, k, rotations, chunk, shared_qk, causal):
    """[heads, n, n] effective weights, by plain loops over Reformer's flattened, chunked sequence.

    Builds each round's sorted item list with sorted(), concatenates the rounds,
    cuts chunks, lets each chunk see the previous one (cyclically), then mixes
    the rounds by softmax of their log-sum-exp; float64 throughout.
    """
    q, k = q.double(), k.double()
    heads, n, d = q.shape
    rounds = rotations.shape[2]
    rot = rotations.double()

    def buckets(x, h, r):
        z = x[h] @ rot[h, :, r]
        return torch.cat([z, -z], -1).argmax(-1).tolist()

    length = min(chunk, n)
    size = length if shared_qk else 2 * length
    weights = torch.zeros(heads, n, n, dtype=torch.float64)
    for h in range(heads):
        keys = q[h] / q[h].norm(dim=-1, keepdim=True) if shared_qk else k[h]
        items = []  # (round, bucket, position, is_query, is_key)
        for r in range(rounds):
            bq = buckets(q, h, r)
            if shared_qk:
                items += [(r, b, i, True, True) for b, i in sorted((bq[i], i) for i in range(n))]
            else:
                bk = buckets(k, h, r)
                joint = sorted([(bk[j], j, 0) for j in range(n)] + [(bq[i], i, 1) for i in range(n)])
                items += [(r, b, i, kind == 1, kind == 0) for b, i, kind in joint]
        chunks = [items[c:c + size] for c in range(0, len(items), size)]
        per_round = {}  # (query, round) -> (lse, {key: weight})
        for c, this in enumerate(chunks):
            window = chunks[(c - 1) % len(chunks)] + this
            for r, b, i, is_q, _ in this:
                if not is_q:
                    continue
                terms = []
                for r2, b2, j, _, is_k in window:
                    if not is_k or (causal and j > i) or (not shared_qk and (r2, b2) != (r, b)):
                        continue
                    if shared_qk and j == i:
                        terms.append((j, -1e5))
                    else:
                        terms.append((j, float(q[h, i] @ keys[j]) / (1 if shared_qk else math.sqrt(d))))
                if not terms:
                    per_round[i, r] = (-math.inf, {})
                    continue
                top = max(s for _, s in terms)
                z = sum(math.exp(s - top) for _, s in terms)
                row = {}
                for j, s in terms:
                    row[j] = row.get(j, 0.0) + math.exp(s - top) / z
                per_round[i, r] = (top + math.log(z), row)
        for i in range(n):
            lses = [per_round[i, r][0] for r in range(rounds)]
            if max(lses) == -math.inf:
                continue
            top = max(lses)
            mix = [math.exp(x - top) for x in lses]
            for r in range(rounds):
                for j, w in per_round[i, r][1].items():
                    weights[h, i, j] += mix[r] / sum(mix) * w
    return weights


REF_CASES = [  # n, n_buckets, rounds, chunk
    (23, 4, 2, 5),
    (17, 2, 3, 4),
    (30, 6, 1, 7),
    (9, 8, 2, 20),
    (1, 2, 2, 3),
]


@pytest.mark.parametrize("case", REF_CASES)
@pytest.mark.parametrize("shared_qk", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_bruteforce_reference(case, shared_qk, causal):
    n, n_buckets, rounds, chunk = case
    doc = explorer.synthetic(n, heads=2, head_dim=6, seed=n)
    res = LSH.run(doc.q, doc.k, doc.v, n_buckets=n_buckets, n_rounds=rounds, chunk_length=chunk, seed=3,
                  shared_qk=shared_qk, causal=causal)
    ref = reference_weights(doc.q, doc.k, res.structure.rotations, chunk, shared_qk, causal)
    rows = torch.arange(n)
    assert torch.allclose(res.weights(rows).double(), ref, atol=1e-5)
    assert torch.allclose(res.output.double(), ref @ doc.v.double(), atol=1e-5)


# ---------------------------------------------------------------- the invariant, over random parameters

@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), heads=st.integers(1, 2), d=st.integers(1, 6),
       half_buckets=st.integers(1, 5), rounds=st.integers(1, 3), chunk=st.integers(1, 50),
       seed=st.integers(0, 2**31 - 1), shared_qk=st.booleans(), causal=st.booleans())
def test_invariant_weights_times_v_is_output(n, heads, d, half_buckets, rounds, chunk, seed, shared_qk, causal):
    doc = explorer.synthetic(n, heads=heads, head_dim=d, seed=seed % 1000)
    res = LSH.run(doc.q, doc.k, doc.v, n_buckets=2 * half_buckets, n_rounds=rounds, chunk_length=chunk,
                  seed=seed, shared_qk=shared_qk, causal=causal)
    rows = torch.arange(n)
    w = res.weights(rows)
    scale = max(1.0, float(res.output.abs().max()))
    assert torch.allclose(w @ doc.v, res.output, atol=1e-5 * scale)
    assert (w >= 0).all()
    sums = w.sum(-1)
    assert torch.all(((sums - 1).abs() < 1e-5) | (sums == 0))  # empty only when no key was found
    if shared_qk:
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    reach = res.reach(rows)
    assert not (w > 0)[~reach].any()
    if causal:
        assert not torch.triu(reach, diagonal=1).any()
    sub = torch.tensor([n - 1, 0])
    assert torch.allclose(res.weights(sub), w[:, sub], atol=1e-6)


# ---------------------------------------------------------------- structure

def test_structure_is_consistent():
    n, rounds, n_buckets = 45, 3, 6
    doc = explorer.synthetic(n, heads=2, head_dim=8)
    for shared in (True, False):
        res = LSH.run(doc.q, doc.k, doc.v, n_buckets=n_buckets, n_rounds=rounds, chunk_length=6, shared_qk=shared)
        s = res.structure
        for b, perm, chunk, sizes in ((s.buckets, s.perm, s.query_chunk, s.bucket_sizes),
                                      (s.key_buckets, s.key_perm, s.key_chunk, s.key_bucket_sizes)):
            assert b.shape == perm.shape == (rounds, 2, n)
            assert torch.equal(perm.sort(-1).values, torch.arange(n).expand(rounds, 2, n))
            code = b.gather(2, perm) * n + perm  # sorted by bucket, then position
            assert (code[..., 1:] > code[..., :-1]).all()
            assert torch.equal(sizes.sum(-1), torch.full((rounds, 2), n))
            assert torch.equal(sizes[0, 0], torch.bincount(b[0, 0], minlength=n_buckets))
            assert (chunk[..., 1:] >= chunk[..., :-1]).all()
            assert chunk_starts(chunk[0, 0])[0] == 0
        assert s.items_per_chunk == (6 if shared else 12)
        mix = s.round_weights.sum(0)
        assert torch.all(((mix - 1).abs() < 1e-5) | ((mix == 0) & (not shared)))
    shared_res = LSH.run(doc.q, doc.k, doc.v, n_buckets=4, n_rounds=1, chunk_length=10, shared_qk=True)
    # shared QK: one chunk every chunk_length sorted slots
    assert chunk_starts(shared_res.structure.query_chunk[0, 0]) == [0, 10, 20, 30, 40]


def test_one_bucket_separate_qk_is_dense_attention():
    """All in one bucket (zero rotations) and one chunk: separate-QK LSH is exactly dense attention."""
    n, d = 30, 8
    doc = explorer.synthetic(n, heads=2, head_dim=d)
    zeros = torch.zeros(2, d, 2, 2)
    for causal in (False, True):
        res = LSH.run(doc.q, doc.k, doc.v, n_buckets=4, n_rounds=2, chunk_length=n, rotations=zeros,
                      shared_qk=False, causal=causal)
        dense = attention.weights(doc.q, doc.k, torch.arange(n), causal)
        assert torch.allclose(res.weights(torch.arange(n)), dense, atol=1e-6)
        assert torch.allclose(res.output, dense @ doc.v, atol=1e-5)


def test_shared_qk_ignores_k_and_never_attends_to_self_when_others_exist():
    doc = explorer.synthetic(20, heads=1, head_dim=4)
    a = LSH.run(doc.q, doc.k, doc.v, shared_qk=True, chunk_length=4, n_buckets=4)
    b = LSH.run(doc.q, torch.randn_like(doc.k), doc.v, shared_qk=True, chunk_length=4, n_buckets=4)
    assert torch.equal(a.output, b.output)
    w = a.weights(torch.arange(20))
    assert w.diagonal(dim1=1, dim2=2).max() < 1e-6


def test_separate_qk_query_without_key_in_its_bucket_gets_nothing():
    """Queries all in one bucket, keys all in the other: every round is empty, output and weights are 0."""
    n, d = 12, 4
    q = torch.ones(1, n, d)
    k = -torch.ones(1, n, d)
    rotations = torch.ones(1, d, 2, 1)  # q -> bucket 0, k -> bucket 1
    res = LSH.run(q, k, torch.randn(1, n, d), n_buckets=2, n_rounds=2, chunk_length=3, rotations=rotations)
    assert torch.equal(res.structure.buckets, torch.zeros(2, 1, n, dtype=torch.long))
    assert torch.equal(res.structure.key_buckets, torch.ones(2, 1, n, dtype=torch.long))
    assert torch.equal(res.output, torch.zeros_like(res.output))
    assert not res.weights(torch.arange(n)).any()
    assert not res.reach(torch.arange(n)).any()


def test_deterministic_for_a_seed_and_seed_matters():
    doc = explorer.synthetic(64, heads=2, head_dim=8)
    a = LSH.run(doc.q, doc.k, doc.v, seed=11, n_buckets=8)
    b = LSH.run(doc.q, doc.k, doc.v, seed=11, n_buckets=8)
    c = LSH.run(doc.q, doc.k, doc.v, seed=12, n_buckets=8)
    assert torch.equal(a.output, b.output)
    assert torch.equal(a.structure.buckets, b.structure.buckets)
    assert not torch.equal(a.structure.buckets, c.structure.buckets)


def test_cost_is_reported_and_below_dense_for_long_inputs():
    doc = explorer.synthetic(2048, heads=1, head_dim=16)
    res = LSH.run(doc.q, doc.k, doc.v, chunk_length=32, n_rounds=2)
    assert 0 < res.cost["flops"] < res.cost["dense_flops"]
    assert res.cost["bytes"] > 0 and res.cost["seconds"] > 0


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("params,match", [
    ({"n_buckets": 3}, "n_buckets=3 must be even"),
    ({"n_buckets": 0}, "n_buckets=0"),
    ({"n_buckets": 2.0}, "n_buckets"),
    ({"n_rounds": 0}, "n_rounds=0"),
    ({"n_rounds": 17}, "n_rounds=17"),
    ({"chunk_length": 0}, "chunk_length=0"),
    ({"seed": -1}, "seed=-1"),
    ({"shared_qk": "yes"}, "shared_qk"),
    ({"causal": 2}, "causal"),
    ({"rotations": torch.zeros(2, 8, 4, 8)}, "rotations has shape"),
    ({"rotations": torch.zeros(2, 8, 4, 16, dtype=torch.long)}, "rotations must be a floating-point"),
    ({"rotations": [[1.0]]}, "rotations must be a floating-point"),
    ({"rotations": torch.full((2, 8, 4, 16), float("nan"))}, "rotations must be finite"),
    ({"window": 3}, "unknown parameter"),
])
def test_bad_params_raise(params, match):
    doc = explorer.synthetic(16, heads=2, head_dim=8)
    with pytest.raises(ValueError, match=match):
        LSH.run(doc.q, doc.k, doc.v, **params)


# ---------------------------------------------------------------- what the page draws

def test_chunk_windows_cover_what_each_query_can_reach():
    """One round, so the first chunk wraps to the last: a query reaches only keys inside its chunk's boxes."""
    n = 37
    doc = explorer.synthetic(n, heads=1, head_dim=8, seed=4)
    for shared in (True, False):
        res = LSH.run(doc.q, doc.k, doc.v, n_buckets=4, n_rounds=1, chunk_length=5, shared_qk=shared)
        s = res.structure
        boxes = chunk_windows(s.query_chunk[0, 0], s.key_chunk[0, 0], s.n_chunks)
        assert len(boxes) > len(set(s.query_chunk[0, 0].tolist()))  # the wrapped chunk has two boxes
        slot_of = torch.empty(n, dtype=torch.long)
        slot_of[s.key_perm[0, 0]] = torch.arange(n)
        reach = res.reach(torch.arange(n))[0]
        for slot in range(n):
            mine = [(k0, k1) for q0, q1, k0, k1 in boxes if q0 <= slot < q1]
            assert mine
            seen = slot_of[reach[int(s.perm[0, 0, slot])]]
            inside = torch.zeros(n, dtype=torch.bool)
            for k0, k1 in mine:
                inside[k0:k1] = True
            assert inside[seen].all()


def test_sorted_dense_map_is_the_permuted_dense_matrix():
    n = 24
    doc = explorer.synthetic(n, heads=1, head_dim=8)
    res = LSH.run(doc.q, doc.k, doc.v, n_buckets=4, n_rounds=2, chunk_length=4)
    s = res.structure
    perm, key_perm = s.perm[1, 0], s.key_perm[1, 0]
    pooled = sorted_dense_map(doc.q, doc.k, perm, key_perm, False, (0, n), (0, n), grid=n)
    dense = attention.weights(doc.q, doc.k, torch.arange(n))[0]
    assert torch.allclose(pooled.mean[0], dense[perm][:, key_perm], atol=1e-6)


def brute_force_reach(q, k, rotations, n_buckets, chunk_length, shared_qk):
    """Which keys each query can see, rebuilt from Reformer's layout by hand, token by token.

    Per round, items are listed in (bucket, position[, key before query]) order, the rounds are
    concatenated and cut into chunks; an item sees its own chunk and the one before (cyclic). In
    separate-QK mode a query sees only keys of its own round and bucket."""
    heads, n, d = q.shape
    rounds = rotations.shape[2]
    reach = torch.zeros(heads, n, n, dtype=torch.bool)
    for h in range(heads):
        items = []  # (round, bucket, position, is_query, is_key)
        for r in range(rounds):
            def bucket(x):
                rot = x @ rotations[h, :, r]
                return int(torch.cat([rot, -rot]).argmax())
            if shared_qk:
                row = sorted((bucket(q[h, i]), i) for i in range(n))
                items += [(r, b, i, True, True) for b, i in row]
            else:
                row = sorted([(bucket(k[h, j]), j, 0) for j in range(n)] + [(bucket(q[h, i]), i, 1) for i in range(n)])
                items += [(r, b, i, kind == 1, kind == 0) for b, i, kind in row]
        size = chunk_length if shared_qk else 2 * chunk_length
        chunks = -(-len(items) // size)
        for a, (r, b, i, is_q, _) in enumerate(items):
            if not is_q:
                continue
            c = a // size
            for other in {c, (c - 1) % chunks}:
                for r2, b2, j, _, is_k in items[other * size:(other + 1) * size]:
                    if is_k and (shared_qk or (r2 == r and b2 == b)):
                        reach[h, i, j] = True
    return reach


@pytest.mark.parametrize("shared_qk", [False, True])
def test_reach_and_caught_pairs_equal_a_brute_force_rebuild_of_the_layout(shared_qk):
    n = 45
    doc = explorer.synthetic(n, heads=2, head_dim=8, needles=3, seed=9)
    params = {"n_buckets": 6, "n_rounds": 2, "chunk_length": 7, "shared_qk": shared_qk}
    res = LSH.run(doc.q, doc.k, doc.v, **params)
    expect = brute_force_reach(doc.q, doc.k, res.structure.rotations, 6, 7, shared_qk)
    rows = torch.arange(n)
    assert torch.equal(res.reach(rows), expect)
    top = attention.weights(doc.q, doc.k, rows).topk(4, dim=-1).indices
    picked = torch.tensor([0, 5, 44])
    assert torch.equal(topk_caught(res, top, picked, chunk=2), expect[:, picked].gather(2, top[:, picked]))


def test_seed_recall():
    n = 64
    doc = explorer.synthetic(n, heads=1, head_dim=8, needles=3)
    params = {"n_buckets": 4, "n_rounds": 2, "chunk_length": 8}
    calls = []
    out = seed_recall(doc.q, doc.k, doc.v, params, [3, 4, 3], False, max_rows=16, progress=lambda i, t: calls.append(i))
    assert calls == [1, 2, 3] and out["seed"] == [3, 4, 3]
    assert out["recall"][0] == out["recall"][2]  # same seed, same recall
    assert ((out["reach_mass"] >= 0) & (out["reach_mass"] <= 1 + 1e-6)).all()


def test_figures_build_for_one_token_and_for_long_pooled_input():
    from explorer.core.pooling import pooled_map
    from explorer.figures import lsh as figs

    for n in (1, 3000):
        doc = explorer.synthetic(n, heads=1, head_dim=4)
        res = LSH.run(doc.q, doc.k, doc.v, n_rounds=2, n_buckets=6)
        s = res.structure
        m = pooled_map(res.weights, 1, n, grid=64, per_bin=2)
        figs.map_with_buckets(m.mean[0], doc.tokens, m.row_edges, m.col_edges, s.buckets[0, 0],
                              s.key_buckets[0, 0], log=True)
        figs.bucket_strips(s.buckets[:, 0], s.key_buckets[:, 0], doc.tokens, False)
        figs.bucket_sizes(s.bucket_sizes[0, 0], s.key_bucket_sizes[0, 0])
        figs.size_histogram(s.bucket_sizes[:, 0])
        pooled = sorted_dense_map(doc.q, doc.k, s.perm[0, 0], s.key_perm[0, 0], False, (0, n), (0, n), 64)
        boxes = chunk_windows(s.query_chunk[0, 0], s.key_chunk[0, 0], s.n_chunks)
        fig = figs.sorted_matrix(pooled, doc.tokens, doc.tokens, boxes)
        assert len(fig.layout.shapes) == (len(boxes) if len(boxes) <= figs.MAX_BOXES else 0)
        rows = torch.arange(min(n, 50))
        top = attention.weights(doc.q, doc.k, rows).topk(min(n, 3), dim=-1).indices
        full_top = torch.zeros(1, n, top.shape[-1], dtype=torch.long)
        full_top[:, rows] = top
        hit = topk_caught(res, full_top, rows)[0]
        figs.caught_pairs(rows, full_top[0, rows], hit, doc.tokens)
        figs.caught_by_rank(hit)
    figs.seed_spread({"seed": [0, 1], "recall": torch.tensor([0.2, 0.3]), "reach_mass": torch.tensor([0.1, 0.4])})
