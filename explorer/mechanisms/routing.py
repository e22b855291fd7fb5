"""Routing: the Routing Transformer's k-means attention, and a softmax router over attention paths.

mode "kmeans" (Routing Transformer, Roy et al. 2020). Per head, queries and
keys are unit-normalized and clustered together by spherical k-means (one set
of centroids shared by queries and keys, as in the paper): centroids start
at `n_clusters` seeded random points and take `iterations` batch Lloyd steps
(assign to the most similar centroid, centroid = normalized mean). Deviation:
the paper updates centroids by an exponential moving average during training;
here they are fitted on this text alone. Routing is balanced as in the
reference implementation (lucidrains/routing-transformer): every cluster
takes its top-w queries and its top-w keys by similarity to its centroid
(w = ceil(n / n_clusters) unless `cluster_size` is set), so a token can sit
in no cluster or in several. A query attends to the keys of each cluster it
sits in (masked to earlier keys when causal); several clusters' outputs are
averaged (lucidrains' scatter_mean), a cluster in which it sees no key is
left out of that mean, and a query routed nowhere gets a zero output and a
zero weight row (weights and output agree). n_clusters = 0 picks
round(sqrt(n)), the paper's choice for O(n^1.5) cost; values above n are clamped.

mode "router". P attention paths run side by side: "local" (a sliding window
of +-`window` keys, only earlier ones when causal), "clusters" (the k-means
attention above), and "segmented", "lsh", "lowrank", "dense" (PATHS), each with
its own defaults (dense only when `dense_path`; when causal, only paths with a
causal form). Routing probabilities are r = softmax(x W_r) with x the head's
query vectors; output = sum_p r_p Attn_p and the effective weights are the same
mix of the paths' weights. W_r ([heads, head_dim, P] or [head_dim, P], a tensor) is
seeded random N(0, 1/head_dim) unless given; explorer.analysis.router_fit fits it to match
dense on this text.

structure: ClusterStructure (the k-means clusters); router mode a RouterStructure, which adds
the paths and their routing probabilities.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from explorer.core import attention
from explorer.core.device import chunk_rows
from explorer.core.rows import row_chunks
from explorer.mechanisms.base import Mechanism, Param, Result, Structure
from explorer.mechanisms.dense import MECHANISM as DENSE
from explorer.mechanisms.lowrank import MECHANISM as LOWRANK
from explorer.mechanisms.lsh import MECHANISM as LSH
from explorer.mechanisms.segmented import MECHANISM as SEGMENTED

# The other mechanisms router mode can route to, in the order the paths are listed.
PATHS = {"segmented": SEGMENTED, "lsh": LSH, "lowrank": LOWRANK, "dense": DENSE}


@dataclass
class ClusterStructure(Structure):
    """The k-means clusters (C of them) and how balanced routing filled them."""

    n_clusters: int  # clusters used
    cluster_size: int  # tokens each cluster takes (w)
    query_cluster: torch.Tensor  # LongTensor [heads, n] nearest centroid of each query
    key_cluster: torch.Tensor  # LongTensor [heads, n] nearest centroid of each key
    query_sim: torch.Tensor  # [heads, n] cosine similarity of each query to that centroid
    key_sim: torch.Tensor  # [heads, n] the same for keys
    natural_sizes: torch.Tensor  # [heads, C] queries + keys nearest to each centroid (before balancing)
    query_members: torch.Tensor  # LongTensor [heads, C, w] the balanced clusters' queries (sorted positions)
    key_members: torch.Tensor  # LongTensor [heads, C, w] their keys
    query_routes: torch.Tensor  # LongTensor [heads, n] clusters each query was routed to (0 = none)
    key_routes: torch.Tensor  # LongTensor [heads, n] clusters each key was routed to
    centroid_sim: torch.Tensor  # [heads, C, C] cosine similarity between centroids


@dataclass
class RouterStructure(ClusterStructure):
    """Router mode: the clusters path's structure, and how the router mixed the P paths."""

    paths: list[str]  # path names, P of them
    route: torch.Tensor  # [heads, n, P] routing probabilities
    usage: torch.Tensor  # [heads, P] mean routing probability of each path
    router: torch.Tensor  # [heads, head_dim, P] W_r used
    router_source: str  # "seeded" | "given"
    path_flops: dict[str, int]  # path -> its flops


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[h, idx[h, ...]] for every head: x [heads, n, d], idx [heads, ...] -> [heads, ..., d]."""
    flat = idx.reshape(idx.shape[0], -1, 1).expand(-1, -1, x.shape[-1])
    return x.gather(1, flat).reshape(*idx.shape, x.shape[-1])


def safe_softmax(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the last axis; a row with no finite score becomes zeros. Also returns which rows had one."""
    valid = torch.isfinite(s).any(-1, keepdim=True)
    return torch.softmax(s.masked_fill(~valid, 0.0), -1) * valid, valid.squeeze(-1)


def spherical_kmeans(x: torch.Tensor, n_clusters: int, iterations: int, gen: torch.Generator) -> torch.Tensor:
    """Centroids [heads, C, d] of unit vectors x [heads, N, d]: seeded points, then Lloyd steps.

    An emptied cluster keeps its previous centroid.
    """
    heads, count, d = x.shape
    picks = torch.rand(heads, count, generator=gen, device=x.device).argsort(-1)[:, :n_clusters]
    centroids = take(x, picks)
    for _ in range(iterations):
        nearest = torch.matmul(x, centroids.transpose(1, 2)).argmax(-1)
        sums = torch.zeros_like(centroids).scatter_add_(1, nearest[..., None].expand(-1, -1, d), x)
        filled = torch.zeros(heads, n_clusters, device=x.device, dtype=x.dtype).scatter_add_(1, nearest, torch.ones_like(x[..., 0]))
        centroids = torch.where(filled[..., None] > 0, unit(sums), centroids)
    return centroids


def top_members(x: torch.Tensor, centroids: torch.Tensor, width: int) -> torch.Tensor:
    """[heads, C, width]: each cluster's `width` most similar tokens, in text order."""
    sims = torch.matmul(x, centroids.transpose(1, 2))  # [heads, n, C]
    return sims.topk(width, dim=1).indices.transpose(1, 2).sort(-1).values


def memberships(members: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clusters of every token [heads, n, M] (-1 padded) and how many [heads, n], from the member lists."""
    heads, clusters, width = members.shape
    flat = members.reshape(heads, -1)
    cid = torch.arange(clusters, device=members.device).repeat_interleave(width).expand(heads, -1)
    order = flat.argsort(dim=-1, stable=True)
    tok, cid = flat.gather(-1, order), cid.gather(-1, order)
    counts = torch.zeros(heads, n, dtype=torch.long, device=members.device).scatter_add_(1, flat, torch.ones_like(flat))
    most = max(1, int(counts.max()))
    first = counts.cumsum(-1) - counts
    rank = torch.arange(flat.shape[1], device=members.device) - first.gather(-1, tok)
    table = torch.full((heads, n * most), -1, dtype=torch.long, device=members.device)
    table.scatter_(1, tok * most + rank, cid)
    return table.view(heads, n, most), counts


def cluster_output(q, k, v, qm: torch.Tensor, km: torch.Tensor, causal: bool) -> torch.Tensor:
    """Attention inside every cluster, in blocks of clusters and query slots; means over a query's clusters."""
    heads, n, d = q.shape
    clusters, width = qm.shape[1:]
    out = torch.zeros(heads * n, v.shape[2], device=q.device, dtype=v.dtype)
    count = torch.zeros(heads * n, device=q.device)
    block = chunk_rows(width, heads, q.device)
    span, group = min(width, block), max(1, block // width)
    base = (torch.arange(heads, device=q.device) * n)[:, None, None]
    for c0 in range(0, clusters, group):
        ki = km[:, c0 : c0 + group]
        kg, vg = take(k, ki), take(v, ki)
        for r0 in range(0, width, span):
            qi = qm[:, c0 : c0 + group, r0 : r0 + span]
            s = torch.matmul(take(q, qi), kg.transpose(-1, -2)) * d**-0.5
            if causal:
                s = s.masked_fill(ki[..., None, :] > qi[..., :, None], float("-inf"))
            p, valid = safe_softmax(s)
            where = (qi + base).reshape(-1)
            out.index_add_(0, where, torch.matmul(p, vg).reshape(-1, v.shape[2]))
            count.index_add_(0, where, valid.reshape(-1).to(count.dtype))
    return (out / count.clamp_min(1)[:, None]).view(heads, n, -1)


def routed_keys(table: torch.Tensor, km: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Key positions [heads, r, M, w] of each row's clusters, and which of the M slots hold a cluster."""
    mem = table[:, rows]  # [heads, r, M], -1 where the row has fewer clusters
    ki = km.gather(1, mem.clamp_min(0).reshape(mem.shape[0], -1, 1).expand(-1, -1, km.shape[2]))
    return ki.view(*mem.shape, km.shape[2]), mem >= 0


def cluster_weights(q, k, table: torch.Tensor, km: torch.Tensor, causal: bool, rows: torch.Tensor) -> torch.Tensor:
    """[heads, len(rows), n]: the same mean of per-cluster softmax rows, gathered from full score rows."""
    heads, n, _ = q.shape
    ki, routed = routed_keys(table, km, rows)
    s = attention.scores(q, k, rows).gather(-1, ki.flatten(2)).view(ki.shape)
    s = s.masked_fill(~routed[..., None], float("-inf"))
    if causal:
        s = s.masked_fill(ki > rows[None, :, None, None], float("-inf"))
    p, valid = safe_softmax(s)
    p = p / valid.sum(-1).clamp_min(1)[..., None, None]
    w = torch.zeros(heads, len(rows), n, device=q.device, dtype=p.dtype)
    return w.scatter_add_(-1, ki.flatten(2), p.flatten(2))


def kmeans_attention(q, k, v, n_clusters: int, cluster_size: int, iterations: int, seed: int,
                     causal: bool) -> Result:
    """The Routing Transformer path: cluster, route balanced, attend within clusters."""
    heads, n, d = q.shape
    clusters = min(n, n_clusters or max(1, round(math.sqrt(n))))
    width = min(n, cluster_size or math.ceil(n / clusters))
    gen = torch.Generator(device=q.device).manual_seed(seed)
    uq, uk = unit(q), unit(k)
    centroids = spherical_kmeans(torch.cat([uq, uk], 1), clusters, iterations, gen)
    qm, km = top_members(uq, centroids, width), top_members(uk, centroids, width)
    table, q_routes = memberships(qm, n)
    out = cluster_output(q, k, v, qm, km, causal)
    sims_q, sims_k = torch.matmul(uq, centroids.transpose(1, 2)), torch.matmul(uk, centroids.transpose(1, 2))
    (q_sim, q_near), (k_sim, k_near) = sims_q.max(-1), sims_k.max(-1)
    natural = torch.zeros(heads, clusters, device=q.device)
    for near in (q_near, k_near):
        natural.scatter_add_(1, near, torch.ones_like(near, dtype=natural.dtype))
    k_routes = torch.zeros(heads, n, dtype=torch.long, device=q.device).scatter_add_(
        1, km.flatten(1), torch.ones_like(km.flatten(1)))
    structure = ClusterStructure(
        n_clusters=clusters, cluster_size=width,
        query_cluster=q_near.cpu(), key_cluster=k_near.cpu(), query_sim=q_sim.cpu(), key_sim=k_sim.cpu(),
        natural_sizes=natural.cpu(), query_members=qm.cpu(), key_members=km.cpu(),
        query_routes=q_routes.cpu(), key_routes=k_routes.cpu(),
        centroid_sim=torch.matmul(centroids, centroids.transpose(1, 2)).cpu())
    dv = v.shape[2]
    fit = (iterations + 1) * 2 * (2 * n) * clusters * d
    cost = {"flops": heads * (fit + 2 * clusters * width * width * (d + dv)),
            "bytes": 4 * heads * (clusters * width * width + 2 * n * (2 * d + dv) + clusters * width * (d + dv))}

    def reach_fn(rows):
        ki, routed = routed_keys(table, km, rows)
        hit = torch.zeros(heads, len(rows), n + 1, dtype=torch.bool, device=q.device)
        hit.scatter_(-1, ki.where(routed[..., None], n).flatten(2), True)
        hit = hit[..., :n]
        if causal:
            hit &= torch.arange(n, device=q.device)[None, None, :] <= rows[None, :, None]
        return hit

    return Result(out, lambda rows: cluster_weights(q, k, table, km, causal, rows), structure=structure,
                  cost=cost, reach_fn=reach_fn)


def band_weights(q, k, rows: torch.Tensor, lo: int, hi: int, window: int, causal: bool) -> torch.Tensor:
    """Softmax of the rows over keys [lo, hi), masked to the band |i - j| <= window (j <= i if causal)."""
    s = torch.matmul(q[:, rows], k[:, lo:hi].transpose(1, 2)) * q.shape[-1] ** -0.5
    gap = torch.arange(lo, hi, device=q.device)[None, :] - rows[:, None]
    far = (gap < -window) | (gap > (0 if causal else window))
    return torch.softmax(s.masked_fill(far, float("-inf")), -1)


def local_attention(q, k, v, window: int, causal: bool) -> Result:
    """Sliding-window path: every query sees the keys within `window` positions (and itself)."""
    heads, n, d = q.shape
    ahead = 0 if causal else window
    out = torch.empty(heads, n, v.shape[2], device=q.device, dtype=v.dtype)
    for rows in row_chunks(n, 1024, q.device):
        lo, hi = max(0, int(rows[0]) - window), min(n, int(rows[-1]) + ahead + 1)
        out[:, rows] = band_weights(q, k, rows, lo, hi, window, causal) @ v[:, lo:hi]

    def reach_fn(rows):
        gap = torch.arange(n, device=q.device)[None, :] - rows[:, None]
        return ((gap >= -window) & (gap <= ahead))[None].expand(heads, -1, -1)

    span = min(n, window + ahead + 1)
    cost = {"flops": 2 * heads * n * span * (d + v.shape[2]),
            "bytes": 4 * heads * (n * span + n * (2 * d + 2 * v.shape[2]))}
    return Result(out, lambda rows: band_weights(q, k, rows, 0, n, window, causal), cost=cost, reach_fn=reach_fn)


def available_paths(causal: bool, dense_path: bool) -> list[str]:
    """Path names in order: local, clusters, then the other mechanisms that fit the setting."""
    names = ["local", "clusters"]
    for key, mech in PATHS.items():
        if key == "dense" and not dense_path:
            continue
        if causal and "causal" not in {p.name for p in mech.params}:
            continue
        names.append(key)
    return names


def run_paths(q, k, v, params: dict) -> tuple[list[str], list[Result]]:
    """Every path's Result on the whole sequence (other mechanisms with their own defaults)."""
    causal = params["causal"]
    names = available_paths(causal, params["dense_path"])
    results = []
    for name in names:
        if name == "local":
            results.append(local_attention(q, k, v, params["window"], causal))
        elif name == "clusters":
            results.append(kmeans_attention(q, k, v, params["n_clusters"], params["cluster_size"],
                                            params["iterations"], params["seed"], causal))
        else:
            mech = PATHS[name]
            extra = {"causal": causal} if "causal" in {p.name for p in mech.params} else {}
            results.append(mech.run(q, k, v, **extra))
    return names, results


def seeded_router(heads: int, d: int, paths: int, seed: int, device) -> torch.Tensor:
    """W_r ~ N(0, 1/d): [heads, d, paths], logits of order |x| / sqrt(d)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(heads, d, paths, generator=gen, device=device) * d**-0.5


def check_router(router, heads: int, d: int, names: list[str], device) -> torch.Tensor:
    """A given W_r as [heads, d, P] on the device, or ValueError naming the expected shape."""
    want = (heads, d, len(names))
    if not torch.is_tensor(router) or not router.is_floating_point():
        raise ValueError(f"routing: parameter router must be a float tensor "
                         f"of shape {list(want)} or {list(want[1:])} (paths {names})")
    if tuple(router.shape) == want[1:]:
        router = router.expand(heads, -1, -1)
    if tuple(router.shape) != want:
        raise ValueError(f"routing: parameter router=tensor of shape {list(router.shape)} must have shape "
                         f"{list(want)} or {list(want[1:])} (paths {names})")
    if not torch.isfinite(router).all():
        raise ValueError("routing: parameter router=tensor holds non-finite values")
    return router.to(device=device, dtype=torch.float32)


def route_probabilities(q: torch.Tensor, router: torch.Tensor) -> torch.Tensor:
    """r = softmax(x W_r) [heads, n, P], x the head's query vectors."""
    return torch.softmax(torch.matmul(q.float(), router), -1)


def mix(results: list[Result], route: torch.Tensor, names: list[str], router: torch.Tensor,
        given: bool, kmeans: Result) -> Result:
    """The routed sum of the paths: output, weights and reach all mixed with the same r."""
    heads, n, _ = route.shape
    out = sum(route[..., p, None].to(r.output.dtype) * r.output for p, r in enumerate(results))

    def weights_fn(rows):
        return sum(route[:, rows, p, None] * r.weights_fn(rows) for p, r in enumerate(results))

    def reach_fn(rows):
        hit = results[0].reach(rows)
        for r in results[1:]:
            hit = hit | r.reach(rows)
        return hit

    own = {"flops": 2 * heads * n * router.shape[1] * len(names) + 2 * heads * n * len(names) * out.shape[2],
           "bytes": 4 * heads * n * (router.shape[1] + len(names) * (1 + out.shape[2]))}
    cost = {key: own[key] + sum(r.cost[key] for r in results) for key in own}
    structure = RouterStructure(**vars(kmeans.structure), paths=names, route=route.cpu(), usage=route.mean(1).cpu(),
                                router=router.cpu(), router_source="given" if given else "seeded",
                                path_flops={name: r.cost["flops"] for name, r in zip(names, results)})
    return Result(out, weights_fn, structure=structure, cost=cost, reach_fn=reach_fn)


class Routing(Mechanism):
    key = "routing"
    title = "Routing"
    summary = (
        "Routing Transformer: queries and keys are unit-normalized and clustered together by "
        "spherical k-means; every cluster takes its w closest queries and keys, and a query "
        "attends only to the keys of the clusters it joined (a query no cluster took gets "
        "nothing). In router mode a softmax over the query vector, r = softmax(x W_r), mixes "
        "several attention paths token by token; W_r is random until you fit it to dense attention "
        "on this text.")
    params = (
        Param("mode", "kmeans", choices=("kmeans", "router"), help="k-means cluster attention, or a router over paths",
              label="Mode", choice_text={"kmeans": "k-means clusters", "router": "router over paths"}),
        Param("n_clusters", 0, 0, 100_000, help="k-means clusters (0 = round(sqrt(n)); clamped to n)",
              label="Clusters (0: automatic, √n)"),
        Param("cluster_size", 0, 0, 1_000_000, help="tokens each cluster takes, w (0 = ceil(n / clusters))",
              label="Tokens per cluster (0: automatic, n / clusters)"),
        Param("iterations", 10, 0, 100, help="k-means (Lloyd) iterations after the seeded start",
              label="k-means iterations"),
        Param("window", 64, 0, 1_000_000, help="router mode: the local path's half window",
              label="Router: local path window (± tokens)"),
        Param("dense_path", True, help="router mode: include dense attention as a path",
              label="Router: dense attention as a path"),
        Param("seed", 0, 0, 2**31 - 1, help="seed of the k-means start and of the random router",
              label="Seed of k-means and the router"),
        Param("causal", False, help="mask keys after the query (in every path)",
              label="Causal mask (every path)"),
        Param("router", None, help="router mode: W_r [heads, head_dim, paths] or [head_dim, paths], a tensor; "
                                    "None = seeded random"),
    )

    def check_together(self, values: dict) -> None:
        if values["mode"] == "kmeans" and values["router"] is not None:
            raise ValueError("routing: parameter router is only used with mode='router'")

    def compute(self, q, k, v, mode, n_clusters, cluster_size, iterations, window, dense_path, seed,
                causal, router):
        params = dict(n_clusters=n_clusters, cluster_size=cluster_size, iterations=iterations,
                      window=window, dense_path=dense_path, seed=seed, causal=causal)
        if mode == "kmeans":
            return kmeans_attention(q, k, v, n_clusters, cluster_size, iterations, seed, causal)
        heads, _, d = q.shape
        names = available_paths(causal, dense_path)
        weights = (seeded_router(heads, d, len(names), seed, q.device) if router is None
                   else check_router(router, heads, d, names, q.device))
        names, results = run_paths(q, k, v, params)
        return mix(results, route_probabilities(q, weights), names, weights, router is not None,
                   results[names.index("clusters")])


MECHANISM = Routing()
