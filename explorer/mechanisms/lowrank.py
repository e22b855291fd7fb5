"""Low-rank attention: Linformer, Nystromformer and the truncated SVD of dense attention.

One mechanism, three methods, one budget `rank` (clamped to n, so a rank
larger than the text means "full size"):

- linformer (Wang et al. 2020): keys and values are projected along the
  sequence axis to `rank` rows, K' = E K and V' = F V, and each query attends
  to those rows: softmax(q K'^T / sqrt(d)) V'. E, F are [rank, n]: seeded
  Gaussian N(0, 1/rank) as in the paper's analysis (the paper learns them;
  a model that was not trained with them has none, so a random projection
  is the paper's own starting point), or segment means. `share_kv` makes
  F = E (the paper's key-value sharing). One E (and F) serves all heads
  (the paper's headwise sharing). The effective weights on the original
  tokens are softmax(...) @ F: with Gaussian projections they are signed and
  do not sum to one, so they must be drawn on a diverging scale.
- nystrom (Xiong et al. 2021): landmarks are segment means of q and k, and
  P ~ F1 pinv(A) B3 with F1 = softmax(q K~^T), A = softmax(Q~ K~^T),
  B3 = softmax(Q~ k^T), all scaled by 1/sqrt(d). The pseudo-inverse is the
  paper's iterative Moore-Penrose method (Z0 = A^T / (||A||_1 ||A||_inf),
  per head, then `pinv_iters` steps of
  Z <- Z (13 I - A Z (15 I - A Z (7 I - A Z))) / 4) or exact torch.linalg.pinv.
  Deviations: the paper's code needs n divisible by the landmark count; here
  segments are near-equal (lengths differ by at most one), which is the
  paper's scheme whenever the count divides n. The paper's model also adds a
  depthwise convolution of V along the sequence (a learned skip, kernel 33)
  to the output; it is left out, because no layer here was trained with one
  and it is not attention: the output is exactly the effective weights @ v.
- svd: the best rank-k approximation of the dense attention matrix P
  (Eckart-Young), the yardstick for the other two: output = P_k v. Exact
  (torch.linalg.svd of the materialized P) when n <= AUTO_EXACT_N or asked;
  otherwise randomized subspace iteration (Halko, Martinsson & Tropp 2011,
  Alg. 4.4) whose only access to P is P @ X and P^T @ Y, streamed over query
  chunks (never n x n). Its error is measured, not assumed: ||P - P_k||_F
  exactly (||P||_F^2 is summed in the first pass), and ||P - P_k||_2 bounded
  with probability 1 - 1e-10 by Halko's a-posteriori estimate (eq. 4.3) from
  PROBES extra Gaussian vectors. This method costs more than dense attention:
  it measures what rank k could achieve, it is not a fast algorithm.

No method has a causal form (Linformer's projection and Nystrom's landmarks
mix future tokens into every summary), so there is no `causal` parameter.

structure: LinformerStructure, NystromStructure or SVDStructure, each a LowRankStructure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from explorer.core import attention
from explorer.core.device import chunk_rows
from explorer.core.pooling import bins, edges
from explorer.core.rows import row_chunks
from explorer.mechanisms.base import Mechanism, Param, Result, Structure

METHODS = ("linformer", "nystrom", "svd")
AUTO_EXACT_N = 1024  # "auto" runs the exact SVD up to here (well under a second per head on a CPU)
EXACT_MAX_N = 4096  # beyond it the n x n matrix and its O(n^3) SVD are refused
PROBES = 10  # Gaussian probe vectors of the a-posteriori error bound (failure probability 10^-PROBES)
SVD_FLOPS = 21  # thin SVD with U and V of an n x n matrix costs about 21 n^3 (Golub & Van Loan)


def generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class SegmentMeans:
    """Contiguous near-equal segments (explorer.core.pooling.bins): project = mean over each."""

    def __init__(self, n: int, count: int, device):
        self.index, self.count = bins(0, n, count, device)
        self.sizes = torch.bincount(self.index, minlength=self.count).float()
        self.edges = edges(0, n, count)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[heads, n, d] -> [heads, count, d]: segment means."""
        total = x.new_zeros(x.shape[0], self.count, x.shape[2]).index_add_(1, self.index, x)
        return total / self.sizes.to(x.dtype)[None, :, None]

    def spread(self, w: torch.Tensor) -> torch.Tensor:
        """[heads, r, count] -> [heads, r, n]: w @ (the mean matrix), a segment's weight shared by its tokens."""
        return w[..., self.index] / self.sizes.to(w.dtype)[self.index]


class GaussianProjection:
    """A [k, n] matrix of i.i.d. N(0, 1/k) entries (Linformer's Johnson-Lindenstrauss argument)."""

    def __init__(self, k: int, n: int, gen: torch.Generator, device, dtype):
        self.matrix = torch.randn(k, n, generator=gen, device=device, dtype=dtype) / math.sqrt(k)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.matrix @ x

    def spread(self, w: torch.Tensor) -> torch.Tensor:
        return w @ self.matrix


@dataclass
class LowRankStructure(Structure):
    """What every method shares; each method's own subclass adds what it computed."""

    method: str  # "linformer" | "nystrom" | "svd"
    rank: int  # used: the requested rank clamped to n
    rank_requested: int

    @property
    def pooled_edges(self) -> list[int] | None:
        """Edges of the segments the method pooled over (first token of each, then n), None if none."""
        return None


@dataclass
class LinformerStructure(LowRankStructure):
    projection: str  # "gaussian" | "mean"
    share_kv: bool  # F = E (always so for segment means)
    seed: int
    segment_edges: list[int] | None  # mean projection: first token of every segment plus n; None for gaussian

    @property
    def pooled_edges(self) -> list[int] | None:
        return self.segment_edges


@dataclass
class NystromStructure(LowRankStructure):
    landmark_edges: list[int]  # first token of every landmark segment plus n
    pinv: str  # "iterative" | "exact"
    pinv_iters: int
    pinv_residual: torch.Tensor  # [heads] ||A Z A - A||_F / ||A||_F

    @property
    def pooled_edges(self) -> list[int] | None:
        return self.landmark_edges


@dataclass
class SVDStructure(LowRankStructure):
    solver: str  # "exact" | "randomized"
    oversample: int | None  # randomized only
    power_iters: int | None  # randomized only
    singular_values: torch.Tensor  # [heads, l]: all n when exact, the top rank + oversample when randomized
    frobenius_error: torch.Tensor  # [heads] ||P - P_k||_F
    relative_frobenius_error: torch.Tensor  # [heads] ||P - P_k||_F / ||P||_F
    spectral_error: torch.Tensor  # [heads] ||P - P_k||_2: exact sigma_{k+1}, or the probabilistic bound
    error_note: str  # how the errors were measured, in words


# --- streamed access to the dense attention matrix P ------------------------------------------


def stream_products(q, k, causal: bool = False, right=None, left=None, frobenius: bool = False):
    """One pass over query chunks: (P @ right, P^T @ left, ||P||_F^2 per head), never n x n.

    right: [heads, n, a] or None; left: [heads, n, b] or None; each result is
    None when not asked for.
    """
    heads, n, _ = q.shape
    pr = None if right is None else q.new_zeros(heads, n, right.shape[2])
    pl = None if left is None else q.new_zeros(heads, n, left.shape[2])
    fro2 = q.new_zeros(heads) if frobenius else None
    for rows in row_chunks(n, chunk_rows(n, heads, q.device), q.device):
        w = attention.weights(q, k, rows, causal)
        if frobenius:
            fro2 += w.square().sum((1, 2))
        if right is not None:
            pr[:, rows] = w @ right
        if left is not None:
            pl += w.transpose(1, 2) @ left[:, rows]
    return pr, pl, fro2


@dataclass
class Truncated:
    """P ~ U diag(s) Vt per head, with what is needed to state the error of each truncation."""

    u: torch.Tensor  # [heads, n, l]
    s: torch.Tensor  # [heads, l] descending
    vt: torch.Tensor  # [heads, l, n]
    fro2: torch.Tensor  # [heads] ||P||_F^2, exact
    solver: str  # "exact" | "randomized"
    oversample: int | None = None
    power_iters: int | None = None
    probe: torch.Tensor | None = None  # [heads, n, PROBES] P @ omega, omega independent of u

    def factors(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(U_r diag(s_r) [heads, n, r], Vt_r [heads, r, n]): P_rank is their product."""
        return self.u[:, :, :rank] * self.s[:, None, :rank], self.vt[:, :rank]

    def frobenius_error(self, rank: int) -> torch.Tensor:
        """||P - P_rank||_F per head: exact, since P_rank = U_r U_r^T P is an orthogonal projection of P."""
        kept = self.s[:, :rank].square().sum(-1)
        return (self.fro2 - kept).clamp_min(0).sqrt()

    def spectral_error(self, rank: int) -> torch.Tensor:
        """||P - P_rank||_2 per head: sigma_{rank+1} when exact, else Halko's bound (eq. 4.3)."""
        if self.solver == "exact":
            return self.s[:, rank] if rank < self.s.shape[1] else self.s.new_zeros(self.s.shape[0])
        u = self.u[:, :, :rank]
        residual = self.probe - u @ (u.transpose(1, 2) @ self.probe)
        return 10 * math.sqrt(2 / math.pi) * residual.norm(dim=1).amax(-1)

    def note(self) -> str:
        if self.solver == "exact":
            return "exact: torch.linalg.svd of the materialized attention matrix"
        return (f"randomized subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4), "
                f"oversampling {self.oversample}, {self.power_iters} power iteration(s), P applied in "
                f"streamed query chunks; Frobenius error exact, spectral error an upper bound holding "
                f"with probability 1 - 1e-{PROBES}")


def exact_svd(q, k, causal: bool = False) -> Truncated:
    """Full SVD of each head's materialized P (only for n up to EXACT_MAX_N)."""
    rows = torch.arange(q.shape[1], device=q.device)
    p = attention.weights(q, k, rows, causal)
    u, s, vt = torch.linalg.svd(p, full_matrices=False)
    return Truncated(u, s, vt, p.square().sum((1, 2)), "exact")


def randomized_svd(q, k, rank: int, oversample: int = 10, power_iters: int = 2, seed: int = 0,
                   causal: bool = False) -> Truncated:
    """Top rank+oversample singular triplets of P from 2 + 2 * power_iters streamed passes."""
    heads, n, _ = q.shape
    width = min(n, rank + oversample)
    gen = generator(seed, q.device)
    omega = torch.randn(heads, n, width + PROBES, generator=gen, device=q.device, dtype=q.dtype)
    sample, _, fro2 = stream_products(q, k, causal, right=omega, frobenius=True)
    probe, basis = sample[..., width:], torch.linalg.qr(sample[..., :width]).Q
    for _ in range(power_iters):
        row_basis = torch.linalg.qr(stream_products(q, k, causal, left=basis)[1]).Q
        basis = torch.linalg.qr(stream_products(q, k, causal, right=row_basis)[0]).Q
    bt = stream_products(q, k, causal, left=basis)[1]  # P^T Q = B^T, [heads, n, width]
    small_u, s, vt = torch.linalg.svd(bt.transpose(1, 2), full_matrices=False)
    return Truncated(basis @ small_u, s, vt, fro2, "randomized", oversample, power_iters, probe)


def attention_svd(q, k, rank: int, solver: str = "auto", oversample: int = 10, power_iters: int = 2,
                  seed: int = 0, causal: bool = False) -> Truncated:
    """Truncated SVD of dense attention by the named solver ("auto": exact up to AUTO_EXACT_N)."""
    n = q.shape[1]
    if solver == "exact" and n > EXACT_MAX_N:
        raise ValueError(f"lowrank: parameter svd_solver='exact' needs n <= {EXACT_MAX_N} "
                         f"(it materializes n x n), got n={n}; use 'randomized' or 'auto'")
    if solver == "exact" or (solver == "auto" and n <= AUTO_EXACT_N):
        return exact_svd(q, k, causal)
    return randomized_svd(q, k, rank, oversample, power_iters, seed, causal)


# --- the pseudo-inverse of Nystrom's middle kernel ---------------------------------------------


def iterative_pinv(a: torch.Tensor, iters: int) -> torch.Tensor:
    """Nystromformer's Moore-Penrose iteration (paper eq. 14), Z0 = A^T / (||A||_1 ||A||_inf) per head."""
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    norm1 = a.abs().sum(-2).amax(-1)
    norm_inf = a.abs().sum(-1).amax(-1)
    z = a.transpose(-1, -2) / (norm1 * norm_inf)[:, None, None]
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def pinv_residual(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """||A Z A - A||_F / ||A||_F per head: 0 for an exact pseudo-inverse."""
    return (a @ z @ a - a).norm(dim=(1, 2)) / a.norm(dim=(1, 2))


# --- the three methods ----------------------------------------------------------------------------


def all_reach(heads: int, n: int, device):
    """Every method mixes every key into its summaries: each query can reach every key."""
    return lambda rows: torch.ones(heads, rows.numel(), n, dtype=torch.bool, device=device)


def linformer(q, k, v, rank, requested, projection, share_kv, seed) -> Result:
    heads, n, d = q.shape
    if projection == "mean":
        e = f = SegmentMeans(n, rank, q.device)
    else:
        gen = generator(seed, q.device)
        e = GaussianProjection(rank, n, gen, q.device, q.dtype)
        f = e if share_kv else GaussianProjection(rank, n, gen, q.device, q.dtype)
    attn = torch.softmax(q @ e.project(k).transpose(1, 2) * d**-0.5, dim=-1)  # [heads, n, rank]
    out = attn @ f.project(v)
    dv = v.shape[2]
    proj_flops = 0 if projection == "mean" else 2 * rank * n * (d + dv)
    cost = {"flops": heads * (proj_flops + 2 * n * rank * (d + dv)),
            "bytes": 4 * (heads * (n * (2 * d + 2 * dv) + n * rank) + (0 if projection == "mean" else 2 * rank * n))}
    structure = LinformerStructure("linformer", rank, requested, projection=projection,
                                   share_kv=share_kv if projection == "gaussian" else True, seed=seed,
                                   segment_edges=e.edges if projection == "mean" else None)
    return Result(out, lambda rows: f.spread(attn[:, rows]), structure, cost, all_reach(heads, n, q.device))


def nystrom(q, k, v, rank, requested, pinv, pinv_iters) -> Result:
    heads, n, d = q.shape
    seg = SegmentMeans(n, rank, q.device)
    q_land, k_land = seg.project(q), seg.project(k)
    scale = d**-0.5
    f1 = torch.softmax(q @ k_land.transpose(1, 2) * scale, dim=-1)  # [heads, n, m]
    a = torch.softmax(q_land @ k_land.transpose(1, 2) * scale, dim=-1)  # [heads, m, m]
    b3 = torch.softmax(q_land @ k.transpose(1, 2) * scale, dim=-1)  # [heads, m, n]
    z = torch.linalg.pinv(a) if pinv == "exact" else iterative_pinv(a, pinv_iters)
    f1z = f1 @ z  # the paper's association, (F1 Z)(B3 V); the weights reuse F1 Z
    out = f1z @ (b3 @ v)
    m, dv = rank, v.shape[2]
    pinv_flops = 8 * m**3 * pinv_iters + 2 * m**3 if pinv == "iterative" else SVD_FLOPS * m**3
    cost = {"flops": heads * (2 * n * d + 4 * n * m * d + 2 * m * m * d + pinv_flops + 2 * n * m * m + 4 * n * m * dv),
            "bytes": 4 * heads * (n * (2 * d + 2 * dv) + 2 * n * m + 2 * m * m)}
    structure = NystromStructure("nystrom", rank, requested, landmark_edges=seg.edges, pinv=pinv,
                                 pinv_iters=pinv_iters, pinv_residual=pinv_residual(a, z).cpu())
    return Result(out, lambda rows: f1z[:, rows] @ b3, structure, cost, all_reach(heads, n, q.device))


def truncated_svd(q, k, v, rank, requested, solver, oversample, power_iters, seed) -> Result:
    heads, n, d = q.shape
    dec = attention_svd(q, k, rank, solver, oversample, power_iters, seed)
    us, vt = dec.factors(rank)
    out = us @ (vt @ v)
    dv, width = v.shape[2], dec.s.shape[1]
    if dec.solver == "exact":
        flops, nbytes = 2 * n * n * d + SVD_FLOPS * n**3, 4 * 4 * n * n
    else:
        passes = 2 + 2 * power_iters
        flops = passes * 2 * n * n * (d + width) + (1 + 2 * power_iters) * 4 * n * width**2 + 6 * n * width**2
        nbytes = passes * 4 * (n * n + 2 * n * d + 2 * n * width)
    cost = {"flops": heads * (flops + 4 * n * rank * dv), "bytes": heads * (nbytes + 4 * n * (2 * dv + 2 * rank))}
    fro = dec.frobenius_error(rank)
    structure = SVDStructure("svd", rank, requested, solver=dec.solver, oversample=dec.oversample,
                             power_iters=dec.power_iters, singular_values=dec.s.cpu(), frobenius_error=fro.cpu(),
                             relative_frobenius_error=(fro / dec.fro2.sqrt()).cpu(),
                             spectral_error=dec.spectral_error(rank).cpu(), error_note=dec.note())
    return Result(out, lambda rows: us[:, rows] @ vt, structure, cost, all_reach(heads, n, q.device))


class LowRank(Mechanism):
    key = "lowrank"
    title = "Low-rank attention"
    summary = (
        "All three methods squeeze attention through k numbers per query. **Linformer** projects "
        "keys and values along the sequence to k rows (seeded Gaussian or segment means) and "
        "attends to those; **Nystromformer** rebuilds the attention matrix from k landmark tokens "
        "(segment means) and a pseudo-inverse; the **SVD** is the best rank-k matrix there is, the "
        "yardstick for the other two. Every map shows the weights each method effectively puts on "
        "the original tokens.")
    params = (
        Param("method", "nystrom", choices=METHODS, help="linformer, nystrom, or svd (the best rank-k yardstick)",
              label="Method", choice_text={"linformer": "Linformer", "nystrom": "Nystromformer", "svd": "Truncated SVD (the best rank k)"}),
        Param("rank", 64, 1, 4096, help="k: Linformer rows, Nystrom landmarks, SVD rank; clamped to n",
              label="Rank k (rows, landmarks or singular vectors)"),
        Param("projection", "gaussian", choices=("gaussian", "mean"),
              help="Linformer E, F: seeded Gaussian N(0, 1/k) or segment means",
              label="Linformer projection", choice_text={"gaussian": "seeded Gaussian", "mean": "segment means"}),
        Param("share_kv", False, help="Linformer: use one projection for keys and values (F = E)",
              label="Linformer: one projection for keys and values"),
        Param("seed", 0, 0, 2**31 - 1, help="seed of Linformer's projections and the randomized SVD",
              label="Seed of the projections and sketches"),
        Param("pinv", "iterative", choices=("iterative", "exact"),
              help="Nystrom pseudo-inverse: the paper's iteration or torch.linalg.pinv",
              label="Nystromformer pseudo-inverse", choice_text={"iterative": "the paper's iteration", "exact": "exact (torch.linalg.pinv)"}),
        Param("pinv_iters", 6, 1, 100, help="Nystrom: Moore-Penrose iterations (the paper uses 6)",
              label="Nystromformer: pseudo-inverse iterations"),
        Param("svd_solver", "auto", choices=("auto", "exact", "randomized"),
              help=f"SVD: exact (n <= {EXACT_MAX_N}), randomized, or auto (exact up to n = {AUTO_EXACT_N})",
              label="SVD solver", choice_text={"auto": f"automatic (exact up to {AUTO_EXACT_N:,} tokens)", "exact": "exact", "randomized": "randomized"}),
        Param("oversample", 10, 0, 1000, help="randomized SVD: extra sketch columns beyond k",
              label="Randomized SVD: extra sketch columns"),
        Param("power_iters", 2, 0, 20, help="randomized SVD: power (subspace) iterations",
              label="Randomized SVD: power iterations"),
    )

    def compute(self, q, k, v, method, rank, projection, share_kv, seed, pinv, pinv_iters,
                svd_solver, oversample, power_iters):
        used = min(rank, q.shape[1])
        if method == "linformer":
            return linformer(q, k, v, used, rank, projection, share_kv, seed)
        if method == "nystrom":
            return nystrom(q, k, v, used, rank, pinv, pinv_iters)
        return truncated_svd(q, k, v, used, rank, svd_solver, oversample, power_iters, seed)


MECHANISM = LowRank()
