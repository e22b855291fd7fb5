"""Relative-position biases against independent references.

T5 bucketing and bias against the T5 code transformers ships, ALiBi slopes
against the paper's formula (and BLOOM's implementation), Shaw and ALiBi
against a brute-force dense pass with the bias matrix written out, RoPE
against the complex-multiplication form.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import T5Config
from transformers.models.t5.modeling_t5 import T5Attention

import explorer
from explorer.mechanisms import REGISTRY

try:  # BLOOM's ALiBi slopes: a second implementation to agree with (private, so not in every version)
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes
except ImportError:  # pragma: no cover - older or newer transformers
    _get_alibi_slopes = None
from explorer.analysis import relpos as relpos_views
from explorer.mechanisms import relpos

MECH = REGISTRY["relpos"]


def qkv(n, heads=2, d=8, seed=0):
    doc = explorer.synthetic(n, heads=heads, head_dim=d, seed=seed)
    return doc.q, doc.k, doc.v


def dense_with_bias(q, k, v, bias, causal):
    """softmax(q k^T / sqrt(d) + bias, masked) written out in full."""
    n = q.shape[1]
    s = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]) + bias
    if causal:
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    w = torch.softmax(s, -1)
    return w, w @ v


def distance_matrix(n):
    i = torch.arange(n)
    return i[None, :] - i[:, None]  # key - query


def paper_slopes(n):
    """ALiBi: geometric 2^(-8/p)... for p = largest power of two <= n, then 2^(-4/p) at odd powers."""
    p = 1
    while p * 2 <= n:
        p *= 2
    first = [2 ** (-8 * i / p) for i in range(1, p + 1)]
    extra = [2 ** (-4 * (2 * t - 1) / p) for t in range(1, n - p + 1)]
    return torch.tensor(first + extra, dtype=torch.float64)


def t5_reference_bias(values, n, causal, num_buckets, max_distance):
    """T5Attention.compute_bias of transformers with the given bucket values: [heads, n, n]."""
    heads = values.shape[1]
    config = T5Config(d_model=8, d_kv=4, num_heads=heads, relative_attention_num_buckets=num_buckets,
                      relative_attention_max_distance=max_distance, is_decoder=causal)
    attn = T5Attention(config, has_relative_attention_bias=True)
    with torch.no_grad():
        attn.relative_attention_bias.weight.copy_(values)
        return attn.compute_bias(n, n)[0]


# ---------------------------------------------------------------- t5_bucket


BUCKET_SETTINGS = [(bi, nb, md) for bi in (True, False) for nb in (4, 6, 8, 16, 32, 33, 64, 128)
                   for md in (5, 20, 128, 1000) if md > (nb // 2 if bi else nb) // 2]


@pytest.mark.parametrize("bidirectional,num_buckets,max_distance", BUCKET_SETTINGS)
def test_t5_bucket_matches_transformers(bidirectional, num_buckets, max_distance):
    rel = torch.cat([torch.arange(-3000, 3001), torch.tensor([-10**6, -65537, 65537, 10**6])])
    ours = relpos.t5_bucket(rel, bidirectional, num_buckets, max_distance)
    ref = T5Attention._relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    assert ours.dtype == torch.long
    assert torch.equal(ours, ref.long())


def test_t5_bucket_on_a_query_key_grid_and_defaults():
    rel = distance_matrix(300)
    assert torch.equal(relpos.t5_bucket(rel), T5Attention._relative_position_bucket(rel))
    assert torch.equal(relpos.t5_bucket(rel, bidirectional=False),
                       T5Attention._relative_position_bucket(rel, bidirectional=False))


@pytest.mark.parametrize("bidirectional,num_buckets,max_distance,match", [
    (True, 3, 128, "num_buckets=3"), (False, 1, 128, "num_buckets=1"), (True, 32, 8, "max_distance=8"),
    (False, 32, 16, "max_distance=16")])
def test_t5_bucket_rejects_undefined_settings(bidirectional, num_buckets, max_distance, match):
    with pytest.raises(ValueError, match=match):
        relpos.t5_bucket(torch.arange(5), bidirectional, num_buckets, max_distance)


# ---------------------------------------------------------------- alibi_slopes


@pytest.mark.parametrize("n", range(1, 65))
def test_alibi_slopes_follow_the_paper(n):
    ours = relpos.alibi_slopes(n)
    assert ours.shape == (n,)
    torch.testing.assert_close(ours, paper_slopes(n), rtol=1e-12, atol=0)
    if _get_alibi_slopes is not None:
        torch.testing.assert_close(ours.float(), _get_alibi_slopes(n, torch.device("cpu")), rtol=1e-6, atol=0)


def test_alibi_slopes_reference_values():
    assert relpos.alibi_slopes(8).tolist() == [1 / 2**i for i in range(1, 9)]
    twelve = relpos.alibi_slopes(12).tolist()
    assert twelve[:8] == [1 / 2**i for i in range(1, 9)]
    assert twelve[8:] == pytest.approx([2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5], rel=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "8"])
def test_alibi_slopes_validates(bad):
    with pytest.raises(ValueError, match="n_heads"):
        relpos.alibi_slopes(bad)


# ---------------------------------------------------------------- against brute force


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 12), (16, 40)])
def test_t5_checkpoint_values_match_t5_compute_bias(causal, num_buckets, max_distance):
    n, heads = 70, 3
    q, k, v = qkv(n, heads)
    values = torch.randn(num_buckets, heads, generator=torch.Generator().manual_seed(5)) * 2
    res = MECH.run(q, k, v, kind="t5", causal=causal, t5_values=values, num_buckets=num_buckets,
                   max_distance=max_distance)
    w, out = dense_with_bias(q, k, v, t5_reference_bias(values, n, causal, num_buckets, max_distance), causal)
    torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.weights(torch.arange(n)), w, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("profile", relpos.PROFILES)
def test_t5_profiles_are_bucket_values_used_as_t5_would(profile):
    n, heads = 60, 4
    q, k, v = qkv(n, heads)
    res = MECH.run(q, k, v, kind="t5", profile=profile, num_buckets=16, max_distance=30, seed=3)
    values = res.structure.t5_values
    assert values.shape == (16, heads)
    w, out = dense_with_bias(q, k, v, t5_reference_bias(values, n, False, 16, 30), False)
    torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-4)


def test_t5_profile_shapes():
    dist = relpos.bucket_distances(True, 32, 128).float()
    decay = relpos.t5_profile("decay", torch.arange(4), 4, True, 32, 128, 0)
    torch.testing.assert_close(decay[:, 3], -torch.log1p(dist))  # last head: full rate
    local = relpos.t5_profile("local", torch.arange(4), 4, True, 32, 128, 0)
    assert torch.equal(local[:, 2] == 0, dist <= 4)  # head 2: 4-token window


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [1, 5, 8, 12])
def test_alibi_matches_brute_force(causal, heads):
    n = 45
    q, k, v = qkv(n, heads)
    res = MECH.run(q, k, v, kind="alibi", causal=causal, scale=2.0)
    bias = -2.0 * paper_slopes(heads).float()[:, None, None] * distance_matrix(n).abs()
    w, out = dense_with_bias(q, k, v, bias, causal)
    torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.weights(torch.arange(n)), w, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("clip", [0, 1, 4, 100])
def test_shaw_matches_brute_force(causal, clip):
    n, heads, d = 40, 2, 8
    q, k, v = qkv(n, heads, d)
    res = MECH.run(q, k, v, kind="shaw", causal=causal, clip=clip, seed=7, scale=0.5)
    emb = relpos.shaw_embeddings(clip, d, 7) * 0.5
    a = torch.empty(n, n, d)
    for i in range(n):
        for j in range(n):
            a[i, j] = emb[max(-clip, min(clip, j - i)) + clip]
    bias = torch.einsum("hid,ijd->hij", q, a) / math.sqrt(d)
    w, out = dense_with_bias(q, k, v, bias, causal)
    torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.weights(torch.arange(n)), w, atol=1e-6, rtol=1e-4)


def rope_complex(x, theta):
    """RoPE as complex multiplication: pair (x_2t, x_2t+1) -> (x_2t + i x_2t+1) e^{i p theta^(-2t/d)}."""
    heads, n, d = x.shape
    pairs = d // 2
    z = torch.view_as_complex(x[..., : 2 * pairs].double().reshape(heads, n, pairs, 2).contiguous())
    freq = theta ** (-torch.arange(pairs, dtype=torch.float64) * 2 / (2 * pairs))
    turned = z * torch.polar(torch.ones(n, pairs, dtype=torch.float64), torch.arange(n)[:, None] * freq)
    return torch.cat([torch.view_as_real(turned).reshape(heads, n, 2 * pairs), x[..., 2 * pairs:].double()], -1)


@pytest.mark.parametrize("d", [8, 7, 1])
@pytest.mark.parametrize("theta", [10000.0, 100.0, 1.0])
def test_rope_rotation_matches_complex_form(d, theta):
    q, _, _ = qkv(50, 2, d)
    torch.testing.assert_close(relpos.rope_rotate(q, theta).double(), rope_complex(q, theta), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_rope_matches_brute_force(causal):
    n, theta = 48, 500.0
    q, k, v = qkv(n, 2, 8)
    res = MECH.run(q, k, v, kind="rope", causal=causal, theta=theta)
    qr, kr = rope_complex(q, theta).float(), rope_complex(k, theta).float()
    w, out = dense_with_bias(qr, kr, v, 0.0, causal)
    torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.weights(torch.arange(n)), w, atol=1e-6, rtol=1e-4)


def test_rope_scores_depend_only_on_relative_position():
    _, _, d = (1, 1, 16)
    vec_q, vec_k = torch.randn(2, 1, 1, d, generator=torch.Generator().manual_seed(1))
    n = 64
    q, k = vec_q.expand(1, n, d).clone(), vec_k.expand(1, n, d).clone()
    s = relpos.rope_rotate(q)[0] @ relpos.rope_rotate(k)[0].T
    for m in (-20, 0, 7):
        diag = torch.diagonal(s, offset=m)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- the invariant


@st.composite
def settings_strategy(draw):
    kind = draw(st.sampled_from(relpos.KINDS))
    causal = draw(st.booleans())
    nb = draw(st.sampled_from([2, 3, 4, 5, 32, 1024]))
    half = nb if causal else nb // 2
    if half < 2:
        nb = 4
        half = nb if causal else 2
    md = draw(st.sampled_from([half // 2 + 1, max(128, half // 2 + 1), 10**7]))
    heads = draw(st.integers(1, 3))
    offset = draw(st.sampled_from([0, 2, 4096 - 3]))
    return dict(
        n=draw(st.integers(1, 37)), heads=heads, d=draw(st.sampled_from([1, 3, 8])),
        params=dict(kind=kind, causal=causal, scale=draw(st.sampled_from([0.0, 1.0, 37.5, 1000.0])),
                    num_buckets=nb, max_distance=md, profile=draw(st.sampled_from(relpos.PROFILES)),
                    clip=draw(st.sampled_from([0, 1, 5, 16384])), theta=draw(st.sampled_from([1.0, 1e4, 1e12])),
                    seed=draw(st.sampled_from([0, 2**31 - 1])), head_offset=offset,
                    total_heads=draw(st.sampled_from([0, offset + heads, 4096]))),
    )


@settings(max_examples=25, deadline=None)
@given(settings_strategy())
def test_invariant_weights_times_v_is_output(case):
    q, k, v = qkv(case["n"], case["heads"], case["d"], seed=case["n"])
    res = MECH.run(q, k, v, **case["params"])
    n = case["n"]
    rows = torch.arange(n)
    w = res.weights(rows)
    assert w.shape == (case["heads"], n, n)
    assert torch.isfinite(w).all() and (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(case["heads"], n))
    scale = res.output.abs().max().clamp_min(1)
    torch.testing.assert_close(w @ v / scale, res.output / scale, atol=1e-5, rtol=0)
    if case["params"]["causal"]:
        assert (w.masked_select(torch.ones(n, n, dtype=torch.bool).triu(1)) == 0).all()
    reach = res.reach(rows)
    assert reach.shape == w.shape and bool(reach[w > 0].all())
    sample = torch.tensor([n - 1, 0])
    torch.testing.assert_close(res.weights(sample), w[:, sample])


# ---------------------------------------------------------------- heads, seeds, structure


@pytest.mark.parametrize("params", [dict(kind="alibi"), dict(kind="mpnet"), dict(kind="t5", profile="seeded"),
                                    dict(kind="t5", profile="decay"), dict(kind="t5", profile="local"),
                                    dict(kind="t5", t5_values=torch.randn(32, 12))])
def test_one_head_alone_gets_its_bias_among_all_heads(params):
    """Also: T5 values given as nested lists (as JSON carries them) act as the tensor does."""
    q, k, v = qkv(30, 12)
    whole = MECH.run(q, k, v, **params)
    for h in (0, 9, 11):
        alone = MECH.run(q[h:h + 1], k[h:h + 1], v[h:h + 1], head_offset=h, total_heads=12, **params)
        torch.testing.assert_close(alone.output[0], whole.output[h])
        if "t5_values" in params:
            listed = MECH.run(q[h:h + 1], k[h:h + 1], v[h:h + 1], head_offset=h, kind="t5",
                              t5_values=params["t5_values"].tolist())
            torch.testing.assert_close(listed.output, alone.output)


@pytest.mark.parametrize("kind,profile", [("t5", "seeded"), ("shaw", "seeded")])
def test_deterministic_for_a_seed(kind, profile):
    q, k, v = qkv(33, 2)
    a = MECH.run(q, k, v, kind=kind, profile=profile, seed=4)
    b = MECH.run(q, k, v, kind=kind, profile=profile, seed=4)
    c = MECH.run(q, k, v, kind=kind, profile=profile, seed=5)
    assert torch.equal(a.output, b.output)
    assert not torch.allclose(a.output, c.output)


@pytest.mark.parametrize("kind", relpos.KINDS)
def test_structure_bias_is_the_explicit_position_term(kind):
    n, heads = 40, 3
    q, k, v = qkv(n, heads)
    res = MECH.run(q, k, v, kind=kind, clip=3, num_buckets=8, max_distance=20)
    st_ = res.structure
    # the position term as brute force: scores with it minus content scores
    with_pos = torch.log(res.weights(torch.arange(n)))
    content = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    term = with_pos - content
    term = term - term[:, :, :1] + st_.bias_window[:, :, :1]  # softmax drops a per-row constant
    torch.testing.assert_close(st_.bias_window, term, atol=2e-4, rtol=1e-4)
    assert st_.window == (0, n, 0, n)
    dist = st_.distances
    assert torch.equal(dist, torch.arange(-(n - 1), n))
    rel = distance_matrix(n)
    expected = torch.stack([(term * (rel == m)).sum((1, 2)) / (rel == m).sum() for m in dist.tolist()], 1)
    torch.testing.assert_close(st_.bias, expected, atol=2e-4, rtol=1e-4)
    assert st_.bias_exact == (kind in ("t5", "mpnet", "alibi"))


# ---------------------------------------------------------------- MPNet's learned table


def test_the_shipped_mpnet_table_gives_the_real_models_own_position_bias():
    """assets/position_bias/mpnet.json: all-mpnet-base-v2's table [32 buckets, 12 heads] with the bucket
    function gives, bit for bit, the bias the real model computed on a short text (saved beside it by
    scripts/extract_mpnet_bias.py, every distance of a 171-token text: past the max distance of 128)."""
    from explorer.core.bias import RelativeBuckets, relative_bucket

    table = relpos.learned_table()
    assert table.values.shape == (32, 12) and table.values.dtype == torch.float32
    assert table.licence == "Apache-2.0" and "all-mpnet-base-v2" in table.model
    distances = torch.tensor(table.check["distances"])
    saved = torch.tensor(table.check["bias"], dtype=torch.float32)
    assert saved.shape == (12, distances.numel()) and int(distances.max()) > table.max_distance
    bucket = relative_bucket(distances, table.bidirectional, table.num_buckets, table.max_distance)
    assert torch.equal(table.values[bucket].T, saved)
    assert set(bucket.tolist()) == set(range(32)) - {16}  # every bucket a distance reaches (16: +0, never)
    rule_bias = RelativeBuckets(tuple(map(tuple, table.values.T.tolist())), table.max_distance)
    assert torch.equal(rule_bias.values(distances), saved)  # as a captured MPNet layer adds it


def test_the_mpnet_kind_adds_the_learned_values_by_t5s_buckets():
    """kind='mpnet': the learned table through transformers' T5 bias (its bidirectional bucketing is
    MPNet's); head h of the model gets MPNet's head h mod 12; causal keeps the learned past."""
    n = 150
    q, k, v = qkv(n, 2)
    values = relpos.learned_table().values
    for causal in (False, True):
        res = MECH.run(q, k, v, kind="mpnet", causal=causal, head_offset=13, total_heads=16)
        bias = t5_reference_bias(values, n, False, 32, 128)[[1, 2]]
        w, out = dense_with_bias(q, k, v, bias, causal)
        torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(res.weights(torch.arange(n)), w, atol=1e-5, rtol=1e-4)
    assert res.structure.kind == "mpnet" and res.structure.buckets is not None


def test_bias_map_pools_the_window():
    n = 50
    q, k, _ = qkv(n, 2)
    full = relpos_views.bias_map(q, k, kind="alibi", grid=n)
    pooled = relpos_views.bias_map(q, k, rows=(10, 40), cols=(5, 50), grid=6, kind="alibi")
    block = full.mean[:, 10:40, 5:50]
    rb, cb = pooled.row_edges, pooled.col_edges
    assert rb[0] == 10 and rb[-1] == 40 and cb[0] == 5 and cb[-1] == 50
    expected = torch.stack([torch.stack([block[:, rb[i] - 10:rb[i + 1] - 10, cb[j] - 5:cb[j + 1] - 5].mean((1, 2))
                                         for j in range(len(cb) - 1)], 1) for i in range(len(rb) - 1)], 1)
    torch.testing.assert_close(pooled.mean, expected)
    torch.testing.assert_close(full.mean[0], -(2**-4) * distance_matrix(n).abs().float())  # head 0 of 2
    assert pooled.per_bin is None
    sampled = relpos_views.bias_map(q, k, rows=(10, 40), cols=(5, 50), grid=6, per_bin=1, kind="alibi")
    assert sampled.per_bin == 1  # one query row per bin: the bin's first (linspace(a, b - 1, 1) = a)
    first_rows = torch.stack([torch.stack([full.mean[:, rb[i], cb[j]:cb[j + 1]].mean(-1)
                                           for j in range(len(cb) - 1)], 1) for i in range(len(rb) - 1)], 1)
    torch.testing.assert_close(sampled.mean, first_rows)


def test_bias_curve_over_a_view():
    q, k, _ = qkv(300, 2)
    dist, curve = relpos_views.bias_curve(q, k, distances=[-5, 0, 7, 299], kind="alibi", total_heads=8)
    torch.testing.assert_close(curve, -relpos.alibi_slopes(8)[:2, None].float() * dist.abs())
    dist, curve = relpos_views.bias_curve(q, k, kind="t5")
    assert dist.min() == -299 and dist.max() == 299 and curve.shape == (2, dist.numel()) and dist.numel() <= 401


def test_curve_distances():
    assert torch.equal(relpos.curve_distances(-3, 4), torch.arange(-3, 5))
    d = relpos.curve_distances(-100_000, 100_000, count=401)
    assert d.numel() <= 401 and d[0] == -100_000 and d[-1] == 100_000 and (d.diff() > 0).all()
    assert set(range(-32, 33)) <= set(d.tolist())


@pytest.mark.parametrize("causal", [False, True])
def test_attention_by_distance_matches_loops(causal):
    n = 37
    q, k, v = qkv(n, 2)
    dense = REGISTRY["dense"].run(q, k, v, causal=causal)
    got = relpos_views.attention_by_distance(dense.weights, n, 2, causal=causal, bins=8, chunk=5)
    w = dense.weights(torch.arange(n))
    edges = got["edges"].tolist()
    for b in range(len(edges) - 1):
        pairs = [(i, j) for i in range(n) for j in range(n)
                 if edges[b] <= abs(j - i) < edges[b + 1] and (j <= i or not causal)]
        mean = torch.stack([w[:, i, j] for i, j in pairs]).mean(0)
        torch.testing.assert_close(got["mean"][:, b], mean)
        assert got["pairs"][b] == len(pairs)
    torch.testing.assert_close(got["mass"].sum(1), torch.ones(2))


def test_rope_decay_matches_loops():
    n, theta = 30, 50.0
    q, k, _ = qkv(n, 1, 8)
    got = relpos_views.rope_decay(q, k, theta, distances=[-4, 0, 3, 29])
    qr, kr = rope_complex(q, theta).float(), rope_complex(k, theta).float()
    for col, m in enumerate([-4, 0, 3, 29]):
        pairs = [(i, i + m) for i in range(n) if 0 <= i + m < n]
        ref = torch.stack([qr[0, i] @ kr[0, j] for i, j in pairs]).mean() / math.sqrt(8)
        plain = torch.stack([q[0, i] @ k[0, j] for i, j in pairs]).mean() / math.sqrt(8)
        torch.testing.assert_close(got["rope"][0, col], ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got["plain"][0, col], plain, atol=1e-5, rtol=1e-4)
    assert got["bound"][1] == pytest.approx((8 / 2 + 1) / 2)  # m = 0: |S_j| = j, mean over j = 1..4


def test_rope_bound_against_sum():
    m, d, theta = 13, 6, 100.0
    freqs = [theta ** (-2 * t / d) for t in range(d // 2)]
    partial = [abs(sum(complex(math.cos(m * f), math.sin(m * f)) for f in freqs[:j])) for j in range(1, d // 2 + 1)]
    assert float(relpos.rope_bound(d, theta, [m])[0]) == pytest.approx(sum(partial) / (d // 2))


def test_t5_checkpoint_values_round_trip(tmp_path):
    from transformers import T5Model

    config = T5Config(vocab_size=16, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=3,
                      relative_attention_num_buckets=10, relative_attention_max_distance=40)
    model = T5Model(config)
    model.save_pretrained(tmp_path)
    values, info = relpos.t5_checkpoint_values(str(tmp_path))
    assert info == {"num_buckets": 10, "max_distance": 40, "heads": 3}
    expected = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    torch.testing.assert_close(values, expected.detach())
    dec, _ = relpos.t5_checkpoint_values(str(tmp_path), decoder=True)
    torch.testing.assert_close(dec, model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.detach())


def test_cost_and_timing_are_reported():
    q, k, v = qkv(20, 2)
    for kind in relpos.KINDS:
        cost = MECH.run(q, k, v, kind=kind).cost
        assert cost["flops"] >= cost["dense_flops"] and cost["bytes"] > 0 and cost["seconds"] >= 0


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("params,match", [
    (dict(kind="xl"), "kind='xl'"), (dict(causal="yes"), "causal='yes'"), (dict(scale=-1.0), "scale=-1.0"),
    (dict(scale=float("nan")), "scale=nan"), (dict(num_buckets=1), "num_buckets=1"),
    (dict(num_buckets=2.5), "num_buckets=2.5"), (dict(max_distance=0), "max_distance=0"),
    (dict(profile="flat"), "profile='flat'"), (dict(clip=-1), "clip=-1"), (dict(theta=0.5), "theta=0.5"),
    (dict(seed=-1), "seed=-1"), (dict(head_offset=-1), "head_offset=-1"), (dict(total_heads=5000), "total_heads=5000"),
    (dict(bogus=1), "unknown parameter"),
    # cross-parameter checks
    (dict(kind="t5", num_buckets=3), "num_buckets=3"), (dict(kind="t5", causal=True, num_buckets=2, max_distance=1),
                                                         "max_distance=1"),
    (dict(kind="t5", max_distance=8), "max_distance=8"), (dict(total_heads=2, head_offset=1), "total_heads=2"),
    (dict(kind="alibi", total_heads=1), "total_heads=1"),
    (dict(kind="t5", t5_values=torch.zeros(31, 2)), "t5_values"),
    (dict(kind="t5", t5_values=torch.zeros(32, 1)), "t5_values"),
    (dict(kind="t5", t5_values=torch.zeros(32, 2, dtype=torch.long)), "t5_values"),
    (dict(kind="t5", t5_values=torch.full((32, 2), float("nan"))), "t5_values"),
    (dict(kind="t5", t5_values=[[0.0] * 2] * 31), "t5_values"), (dict(kind="t5", t5_values=[[0.0], [1.0, 2.0]]), "t5_values"),
    (dict(kind="t5", t5_values="values"), "t5_values"),
])
def test_bad_parameters_raise(params, match):
    q, k, v = qkv(10, 2)
    with pytest.raises(ValueError, match=match):
        MECH.run(q, k, v, **params)


def test_other_kinds_ignore_t5_settings():
    """Bucket settings T5 would refuse change nothing for ALiBi, which does not read them."""
    q, k, v = qkv(10, 2)
    with pytest.raises(ValueError, match="num_buckets"):
        MECH.run(q, k, v, kind="t5", num_buckets=2, max_distance=1)
    odd = MECH.run(q, k, v, kind="alibi", num_buckets=2, max_distance=1)
    plain = MECH.run(q, k, v, kind="alibi")
    torch.testing.assert_close(odd.output, plain.output, atol=0, rtol=0)


def test_view_helpers_validate():
    q, k, _ = qkv(10, 2)
    with pytest.raises(ValueError, match="rows window"):
        relpos_views.bias_map(q, k, rows=(5, 5))
    with pytest.raises(ValueError, match="cols window"):
        relpos_views.bias_map(q, k, cols=(0, 11))
    with pytest.raises(ValueError, match="kind="):
        relpos_views.bias_curve(q, k, kind="nope")
    with pytest.raises(ValueError, match="empty distance range"):
        relpos.curve_distances(3, 2)


def test_one_head_run_through_for_head_equals_that_head_of_a_full_run():
    d = explorer.synthetic(40, heads=4, seed=9)
    full = MECH.run(d.q, d.k, d.v, kind="alibi")
    for h in range(4):
        q, k, v = d.head(h)
        alone = MECH.run(q, k, v, **MECH.for_head({"kind": "alibi"}, h, 4))
        torch.testing.assert_close(alone.output[0], full.output[h])
