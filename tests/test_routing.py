"""Routing: k-means clustering, cluster attention and the router over paths, against direct constructions."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer
from explorer.analysis.router_fit import fit_router
from explorer.mechanisms import REGISTRY, routing

ROUTE = REGISTRY["routing"]


def qkv(n, heads=2, d=8, seed=0):
    doc = explorer.synthetic(n, heads=heads, head_dim=d, seed=seed)
    return doc.q, doc.k, doc.v


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def reference_clusters(q, k, v, qm, km, causal):
    """Per query: the mean over its clusters of softmax over that cluster's keys (loops, dense masks)."""
    heads, n, d = q.shape
    w = torch.zeros(heads, n, n)
    for h in range(heads):
        for i in range(n):
            rows = []
            for c in range(qm.shape[1]):
                if i not in qm[h, c].tolist():
                    continue
                keys = [j for j in km[h, c].tolist() if not causal or j <= i]
                if not keys:
                    continue
                p = torch.softmax(k[h, keys] @ q[h, i] * d**-0.5, -1)
                row = torch.zeros(n)
                row.index_add_(0, torch.tensor(keys), p)
                rows.append(row)
            if rows:
                w[h, i] = torch.stack(rows).mean(0)
    return w, w @ v


def kmeans_objective(x, centroids):
    return (x @ centroids.transpose(1, 2)).max(-1).values.sum()


@pytest.mark.parametrize("n,clusters,size,causal", [(30, 4, 0, False), (30, 4, 0, True), (29, 0, 5, False),
                                                    (17, 3, 17, True), (12, 12, 1, False), (40, 2, 7, True)])
def test_cluster_attention_against_loops(n, clusters, size, causal):
    q, k, v = qkv(n, seed=n)
    res = ROUTE.run(q, k, v, n_clusters=clusters, cluster_size=size, causal=causal, iterations=3)
    st_ = res.structure
    w, out = reference_clusters(q, k, v, st_.query_members, st_.key_members, causal)
    torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.weights(torch.arange(n)), w, atol=1e-6, rtol=1e-5)
    routes = torch.zeros(2, n, dtype=torch.long)
    for h in range(2):
        for c in range(st_.n_clusters):
            routes[h, st_.query_members[h, c]] += 1
    assert torch.equal(st_.query_routes, routes)
    unrouted = st_.query_routes == 0
    assert (res.output[unrouted] == 0).all()


def test_kmeans_deterministic_and_balanced():
    q, k, v = qkv(101, d=16)
    a = ROUTE.run(q, k, v, n_clusters=7, seed=3)
    b = ROUTE.run(q, k, v, n_clusters=7, seed=3)
    c = ROUTE.run(q, k, v, n_clusters=7, seed=4)
    assert torch.equal(a.output, b.output)
    assert torch.equal(a.structure.query_members, b.structure.query_members)
    assert not torch.equal(a.structure.query_members, c.structure.query_members)
    w = math.ceil(101 / 7)
    for members in (a.structure.query_members, a.structure.key_members):
        assert members.shape == (2, 7, w)
        for h in range(2):
            for c_ in range(7):  # w distinct tokens per cluster, in text order
                assert members[h, c_].unique().numel() == w
                assert torch.equal(members[h, c_], members[h, c_].sort().values)
    assert a.structure.query_routes.sum(-1).tolist() == [7 * w, 7 * w]
    assert a.structure.natural_sizes.sum(-1).tolist() == [202.0, 202.0]


def test_members_are_top_similarity():
    q, k, _ = qkv(50, d=16)
    gen = torch.Generator().manual_seed(0)
    uq = unit(q)
    cent = routing.spherical_kmeans(torch.cat([uq, unit(k)], 1), 5, 4, gen)
    members = routing.top_members(uq, cent, 10)
    sims = uq @ cent.transpose(1, 2)
    for h in range(2):
        for c in range(5):
            expect = sims[h, :, c].argsort(descending=True)[:10].sort().values
            assert torch.equal(members[h, c], expect)


def test_kmeans_objective_rises_and_finds_planted_clusters():
    gen = torch.Generator().manual_seed(1)
    x = unit(torch.randn(1, 300, 16, generator=gen))
    objective = [kmeans_objective(x, routing.spherical_kmeans(x, 6, it, torch.Generator().manual_seed(2)))
                 for it in range(6)]
    assert all(b >= a - 1e-4 for a, b in zip(objective, objective[1:]))
    assert objective[-1] > objective[0]
    dirs = unit(torch.randn(3, 16, generator=gen))
    label = torch.arange(90) % 3
    pts = unit(dirs[label] + 0.05 * torch.randn(90, 16, generator=gen))[None]
    cent = routing.spherical_kmeans(pts, 3, 10, torch.Generator().manual_seed(0))
    found = (pts @ cent.transpose(1, 2)).argmax(-1)[0]
    for c in range(3):  # one centroid per planted direction
        assert found[label == c].unique().numel() == 1
    assert found.unique().numel() == 3


def band_reference(q, k, v, window, causal):
    n = q.shape[1]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    mask = (j >= i - window) & (j <= i + (0 if causal else window))
    s = (q @ k.transpose(1, 2)) * q.shape[-1] ** -0.5
    w = torch.softmax(s.masked_fill(~mask, float("-inf")), -1)
    return w, w @ v, mask


@pytest.mark.parametrize("n,window,causal", [(2000, 5, False), (2100, 3, True), (9, 0, False), (9, 50, True)])
def test_local_path_against_mask(n, window, causal):
    q, k, v = qkv(n, heads=1)
    res = routing.local_attention(q, k, v, window, causal)
    w, out, mask = band_reference(q, k, v, window, causal)
    torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-5)
    rows = torch.tensor([0, n // 2, n - 1])
    torch.testing.assert_close(res.weights(rows), w[:, rows], atol=1e-6, rtol=1e-5)
    assert torch.equal(res.reach(rows)[0], mask[rows])


@pytest.mark.parametrize("causal", [False, True])
def test_router_mix_equals_manual_sum(causal):
    n = 48
    q, k, v = qkv(n, seed=5)
    res = ROUTE.run(q, k, v, mode="router", window=4, n_clusters=5, seed=2, causal=causal)
    names = res.structure.paths
    assert names[:2] == ["local", "clusters"] and len(names) == len(set(names))
    assert ("lowrank" in names) == ("lowrank" in REGISTRY and not causal)
    paths = []
    for name in names:
        if name == "local":
            paths.append(band_reference(q, k, v, 4, causal)[:2])
        else:
            mech = ROUTE if name == "clusters" else REGISTRY[name]
            extra = dict(n_clusters=5, seed=2) if name == "clusters" else {}
            if any(p.name == "causal" for p in mech.params):
                extra["causal"] = causal
            r = mech.run(q, k, v, **extra)
            paths.append((r.weights(torch.arange(n)), r.output))
    gen = torch.Generator().manual_seed(2)
    w_r = torch.randn(2, 8, len(names), generator=gen) / math.sqrt(8)
    route = torch.softmax(q @ w_r, -1)
    torch.testing.assert_close(res.structure.route, route)
    out = sum(route[..., p, None] * o for p, (_, o) in enumerate(paths))
    weights = sum(route[..., p, None] * w for p, (w, _) in enumerate(paths))
    torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.weights(torch.arange(n)), weights, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.structure.usage, route.mean(1))


def test_router_given_weights_and_without_dense():
    q, k, v = qkv(32)
    names = routing.available_paths(False, False)
    assert "dense" not in names
    w_r = torch.zeros(8, len(names))
    res = ROUTE.run(q, k, v, mode="router", dense_path=False, router=w_r)
    torch.testing.assert_close(res.structure.route, torch.full((2, 32, len(names)), 1 / len(names)))
    assert res.structure.router_source == "given"
    with pytest.raises(ValueError, match="router=tensor of shape"):
        ROUTE.run(q, k, v, mode="router", router=torch.zeros(8, len(names) + 2))
    with pytest.raises(ValueError, match="router must be a float tensor"):  # lists are the app's (ui.compute)
        ROUTE.run(q, k, v, mode="router", dense_path=False, router=w_r.tolist())
    with pytest.raises(ValueError, match="non-finite"):
        ROUTE.run(q, k, v, mode="router", dense_path=False, router=torch.full((8, len(names)), float("nan")))
    with pytest.raises(ValueError, match="mode='router'"):
        ROUTE.run(q, k, v, router=w_r)


def test_router_fit_lowers_loss():
    q, k, v = qkv(96, seed=7)
    fit = fit_router(q, k, v, steps=60, lr=0.1, sample=48, window=4, seed=1)
    assert len(fit.losses) == 61 and fit.seconds > 0
    assert fit.final_loss < 0.5 * fit.initial_loss
    res = ROUTE.run(q, k, v, mode="router", window=4, seed=1, router=fit.router)
    dense = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(8), -1) @ v
    rows = fit.rows
    err = ((res.output[:, rows] - dense[:, rows]) ** 2).sum() / (dense[:, rows] ** 2).sum()
    assert abs(float(err) - fit.final_loss) < 1e-4
    cheap = fit_router(q, k, v, steps=60, lr=0.1, sample=48, window=4, seed=1, cost_weight=5.0)
    dense_at = fit.paths.index("dense")
    use = lambda f: torch.softmax(q[:, f.rows] @ f.router, -1)[..., dense_at].mean()
    assert use(cheap) < use(fit)
    with pytest.raises(ValueError, match="steps=0"):
        fit_router(q, k, v, steps=0)
    with pytest.raises(ValueError, match="window=-1"):
        fit_router(q, k, v, window=-1)


MODES = st.sampled_from(["kmeans", "router"])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), mode=MODES, clusters=st.integers(0, 45), size=st.integers(0, 45),
       iterations=st.integers(0, 4), window=st.integers(0, 45), causal=st.booleans(), seed=st.integers(0, 5),
       dense_path=st.booleans())
def test_invariant(n, mode, clusters, size, iterations, window, causal, seed, dense_path):
    q, k, v = qkv(n, seed=seed)
    res = ROUTE.run(q, k, v, mode=mode, n_clusters=clusters, cluster_size=size, iterations=iterations,
                    window=window, causal=causal, seed=seed, dense_path=dense_path)
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: max(1, n // 2)]
    w = res.weights(rows)
    torch.testing.assert_close(w @ v, res.output[:, rows], atol=1e-5 * float(res.output.abs().max()), rtol=1e-5)
    assert not (w.abs() > 1e-7)[~res.reach(rows)].any()
    if mode == "kmeans":  # router rows need not sum to 1: Linformer's weights do not
        routed = res.structure.query_routes[:, rows] > 0
        sums = w.sum(-1)  # 1, or 0 for a query routed nowhere (or, causal, seeing no key in its clusters)
        assert ((sums - 1).abs() < 1e-5).logical_or(sums == 0).all()
        assert (sums[~routed] == 0).all()
        if not causal:
            assert ((sums[routed] - 1).abs() < 1e-5).all()


@pytest.mark.parametrize("name,value", [("mode", "lsh"), ("n_clusters", -1), ("cluster_size", 1.5),
                                        ("iterations", 101), ("window", -1), ("seed", -3), ("causal", 2),
                                        ("dense_path", "no")])
def test_bad_params(name, value):
    q, k, v = qkv(8)
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        ROUTE.run(q, k, v, **{name: value})
