"""Low-rank attention against brute-force references, the transformers Nystromformer, and the invariant."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer
from explorer.analysis.lowrank import signed_mass
from explorer.mechanisms import REGISTRY, lowrank
from explorer.mechanisms.lowrank import EXACT_MAX_N, iterative_pinv, randomized_svd, stream_products

MECH = REGISTRY["lowrank"]


def qkv(n, heads=2, d=16, seed=0, scale=1.0):
    doc = explorer.synthetic(n, heads=heads, head_dim=d, seed=seed)
    return doc.q * scale, doc.k * scale, doc.v


def dense_matrix(q, k):
    return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)


def paper_means(x, m):
    """Segment means as the papers' code takes them (n divisible by m)."""
    h, n, d = x.shape
    return x.reshape(h, m, n // m, d).mean(2)


def check_invariant(res, v, rows):
    out = res.output[:, rows]
    scale = out.abs().max().clamp_min(1.0)
    torch.testing.assert_close(res.weights(rows) @ v, out, atol=1e-5 * scale, rtol=1e-4)


# --- Linformer ----------------------------------------------------------------------------------


def test_linformer_gaussian_matches_formula():
    q, k, v = qkv(50)
    rank, seed = 7, 3
    gen = torch.Generator().manual_seed(seed)
    e = torch.randn(rank, 50, generator=gen) / math.sqrt(rank)
    f = torch.randn(rank, 50, generator=gen) / math.sqrt(rank)
    attn = torch.softmax(q @ (e @ k).transpose(1, 2) / 4.0, dim=-1)
    res = MECH.run(q, k, v, method="linformer", rank=rank, seed=seed)
    torch.testing.assert_close(res.output, attn @ (f @ v), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.weights(torch.arange(50)), attn @ f, atol=1e-6, rtol=1e-5)
    shared = MECH.run(q, k, v, method="linformer", rank=rank, seed=seed, share_kv=True)
    torch.testing.assert_close(shared.output, attn @ (e @ v), atol=1e-5, rtol=1e-5)


def test_linformer_gaussian_weights_are_signed():
    q, k, v = qkv(64)
    w = MECH.run(q, k, v, method="linformer", rank=8).weights(torch.arange(64))
    assert (w < 0).any() and (w > 0).any()


def test_linformer_mean_matches_paper_pooling():
    q, k, v = qkv(48)
    e = torch.kron(torch.eye(6), torch.full((1, 8), 1 / 8))  # [6, 48] segment means
    attn = torch.softmax(q @ (e @ k).transpose(1, 2) / 4.0, dim=-1)
    res = MECH.run(q, k, v, method="linformer", rank=6, projection="mean")
    torch.testing.assert_close(res.output, attn @ (e @ v), atol=1e-5, rtol=1e-5)
    assert res.structure.segment_edges == list(range(0, 49, 8))


def test_mean_segments_uneven_n_are_contiguous_and_near_equal():
    q, k, v = qkv(50)
    res = MECH.run(q, k, v, method="linformer", rank=7, projection="mean")
    edges = res.structure.segment_edges
    sizes = [b - a for a, b in zip(edges, edges[1:])]
    assert edges[0] == 0 and edges[-1] == 50 and len(sizes) == 7 and max(sizes) - min(sizes) <= 1
    w = res.weights(torch.arange(50))
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 50))


# --- Nystromformer ------------------------------------------------------------------------------


def test_nystrom_exact_pinv_matches_formula():
    # keys equal to queries at a large scale keep the landmark kernel well conditioned
    q, _, v = qkv(60, scale=3.0)
    k = q.clone()
    m = 6
    ql, kl = paper_means(q, m), paper_means(k, m)
    f1, a, b3 = dense_matrix(q, kl), dense_matrix(ql, kl), dense_matrix(ql, k)
    ref = (f1.double() @ torch.linalg.pinv(a.double()) @ b3.double()).float()
    res = MECH.run(q, k, v, method="nystrom", rank=m, pinv="exact")
    torch.testing.assert_close(res.weights(torch.arange(60)), ref, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(res.output, ref @ v, atol=1e-4, rtol=1e-3)
    assert res.structure.landmark_edges == list(range(0, 61, 10))
    assert float(res.structure.pinv_residual.max()) < 1e-4


def test_nystrom_matches_transformers_reference():
    from transformers import NystromformerConfig
    from transformers.models.nystromformer.modeling_nystromformer import NystromformerSelfAttention

    torch.manual_seed(0)
    n, d, m = 64, 32, 8
    config = NystromformerConfig(hidden_size=d, num_attention_heads=1, num_landmarks=m,
                                 segment_means_seq_len=n, attention_probs_dropout_prob=0.0)
    layer = NystromformerSelfAttention(config).eval()
    layer.conv_kernel_size = None  # the optional depthwise-conv skip is not part of the attention
    x = torch.randn(1, n, d)
    with torch.no_grad():
        ref = layer(x)[0][0]
        q, k, v = layer.query(x), layer.key(x), layer.value(x)
    res = MECH.run(q, k, v, method="nystrom", rank=m, pinv="iterative", pinv_iters=6)
    torch.testing.assert_close(res.output[0], ref, atol=1e-4, rtol=1e-4)


def test_iterative_pinv_converges_to_exact():
    q, _, _ = qkv(40, scale=3.0)
    a = dense_matrix(paper_means(q, 8), paper_means(q, 8))
    torch.testing.assert_close(iterative_pinv(a, 40), torch.linalg.pinv(a), atol=1e-3, rtol=1e-3)
    r6 = MECH.run(q, q, q, method="nystrom", rank=8, pinv_iters=1).structure.pinv_residual
    r20 = MECH.run(q, q, q, method="nystrom", rank=8, pinv_iters=20).structure.pinv_residual
    assert (r20 < r6).all()


def test_nystrom_with_every_token_a_landmark_is_dense():
    q, k, v = qkv(24, scale=3.0)
    k = q.clone()
    res = MECH.run(q, k, v, method="nystrom", rank=100, pinv="exact")
    assert res.structure.rank == 24 and res.structure.rank_requested == 100
    torch.testing.assert_close(res.output, dense_matrix(q, k) @ v, atol=1e-4, rtol=1e-3)


# --- truncated SVD ------------------------------------------------------------------------------


def test_svd_exact_is_eckart_young_truncation():
    q, k, v = qkv(40)
    p = dense_matrix(q, k)
    u, s, vt = torch.linalg.svd(p)
    rank = 5
    pk = u[..., :rank] @ torch.diag_embed(s[:, :rank]) @ vt[:, :rank]
    res = MECH.run(q, k, v, method="svd", rank=rank, svd_solver="exact")
    torch.testing.assert_close(res.weights(torch.arange(40)), pk, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.output, pk @ v, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.structure.frobenius_error, (p - pk).norm(dim=(1, 2)), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.structure.spectral_error, s[:, rank], atol=1e-6, rtol=1e-5)
    assert res.structure.solver == "exact"


def test_randomized_svd_close_to_exact_and_errors_are_honest():
    q, k, v = qkv(300, d=4, scale=2.0)  # a low head_dim gives a decaying spectrum, as real heads have
    p = dense_matrix(q, k)
    exact = torch.linalg.svdvals(p)
    rank = 20
    dec = randomized_svd(q, k, rank, oversample=10, power_iters=3, seed=1)
    rel = (dec.s[:, :rank] - exact[:, :rank]).abs() / exact[:, :rank]
    assert float(rel.max()) < 1e-3
    assert (dec.s[:, :rank] <= exact[:, :rank] * (1 + 1e-5)).all()  # sigma_i(Q^T P) <= sigma_i(P)
    res = MECH.run(q, k, v, method="svd", rank=rank, svd_solver="randomized", power_iters=3, seed=1)
    pk = res.weights(torch.arange(300))
    torch.testing.assert_close(res.structure.frobenius_error, (p - pk).norm(dim=(1, 2)), atol=1e-4, rtol=1e-3)
    true_spectral = torch.linalg.matrix_norm(p - pk, ord=2)
    assert (res.structure.spectral_error >= true_spectral).all()
    best = exact[:, rank:].square().sum(-1).sqrt()  # Eckart-Young optimum
    assert (res.structure.frobenius_error <= best * 1.05).all()


def test_stream_products_match_brute_force(monkeypatch):
    monkeypatch.setattr(lowrank, "chunk_rows", lambda n, heads, device: 7)
    q, k, _ = qkv(30)
    x, y = torch.randn(2, 30, 3), torch.randn(2, 30, 4)
    pr, pl, fro2 = stream_products(q, k, right=x, left=y, frobenius=True)
    p = dense_matrix(q, k)
    torch.testing.assert_close(pr, p @ x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pl, p.transpose(1, 2) @ y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fro2, p.square().sum((1, 2)), atol=1e-5, rtol=1e-5)


def test_full_rank_svd_is_dense():
    q, k, v = qkv(33)
    for solver in ("exact", "randomized"):
        res = MECH.run(q, k, v, method="svd", rank=33, svd_solver=solver)
        torch.testing.assert_close(res.output, dense_matrix(q, k) @ v, atol=1e-4, rtol=1e-4)


# --- the invariant, determinism, validation -----------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 70),
    method=st.sampled_from(lowrank.METHODS),
    rank=st.integers(1, 80),
    projection=st.sampled_from(["gaussian", "mean"]),
    share_kv=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    pinv=st.sampled_from(["iterative", "exact"]),
    pinv_iters=st.sampled_from([1, 6, 100]),
    svd_solver=st.sampled_from(["auto", "exact", "randomized"]),
    oversample=st.sampled_from([0, 10, 1000]),
    power_iters=st.sampled_from([0, 2, 20]),
)
def test_invariant_weights_reproduce_output(n, method, rank, projection, share_kv, seed, pinv, pinv_iters,
                                             svd_solver, oversample, power_iters):
    q, k, v = qkv(n, seed=seed % 1000)
    res = MECH.run(q, k, v, method=method, rank=rank, projection=projection, share_kv=share_kv, seed=seed,
                   pinv=pinv, pinv_iters=pinv_iters, svd_solver=svd_solver, oversample=oversample,
                   power_iters=power_iters)
    assert res.output.shape == v.shape and res.structure.rank == min(rank, n)
    check_invariant(res, v, torch.arange(n))
    rows = torch.tensor([n - 1, 0])
    check_invariant(res, v, rows)
    assert res.reach(rows).all()
    assert res.cost["flops"] > 0 and res.cost["bytes"] > 0


@pytest.mark.parametrize("method", lowrank.METHODS)
def test_deterministic_for_a_seed(method):
    q, k, v = qkv(1500, heads=1)  # beyond AUTO_EXACT_N: svd takes the randomized path
    a = MECH.run(q, k, v, method=method, rank=8, seed=5, power_iters=1)
    b = MECH.run(q, k, v, method=method, rank=8, seed=5, power_iters=1)
    assert torch.equal(a.output, b.output)
    if method != "nystrom":
        c = MECH.run(q, k, v, method=method, rank=8, seed=6, power_iters=1)
        assert not torch.equal(a.output, c.output)


@pytest.mark.parametrize("name, value, match", [
    ("method", "performer", "method='performer'"),
    ("rank", 0, "rank=0"),
    ("rank", 4097, "rank=4097"),
    ("rank", 2.5, "rank=2.5"),
    ("projection", "learned", "projection='learned'"),
    ("share_kv", 2, "share_kv=2"),
    ("seed", -1, "seed=-1"),
    ("pinv", "svd", "pinv='svd'"),
    ("pinv_iters", 0, "pinv_iters=0"),
    ("pinv_iters", 101, "pinv_iters=101"),
    ("svd_solver", "lanczos", "svd_solver='lanczos'"),
    ("oversample", -1, "oversample=-1"),
    ("power_iters", 21, "power_iters=21"),
    ("bogus", 1, "unknown parameter"),
])
def test_bad_params_raise(name, value, match):
    q, k, v = qkv(8)
    with pytest.raises(ValueError, match=match):
        MECH.run(q, k, v, **{name: value})


def test_exact_svd_refused_beyond_limit():
    q, k, v = qkv(EXACT_MAX_N + 1, heads=1, d=2)
    with pytest.raises(ValueError, match=f"svd_solver='exact'.*n={EXACT_MAX_N + 1}"):
        MECH.run(q, k, v, method="svd", svd_solver="exact")


def test_signed_mass_tells_projections_apart():
    q, k, v = qkv(64)
    rows = torch.arange(0, 64, 5)
    mean = signed_mass(MECH.run(q, k, v, method="linformer", projection="mean", rank=8), rows)
    assert mean["negative_share"] == 0.0
    assert mean["row_sum_min"] == pytest.approx(1.0, abs=1e-5) and mean["row_sum_max"] == pytest.approx(1.0, abs=1e-5)
    gauss = signed_mass(MECH.run(q, k, v, method="linformer", rank=8), rows)
    assert 0.2 < gauss["negative_share"] < 0.8
