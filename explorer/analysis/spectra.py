"""How low-rank is one head's attention? Its singular values, and error against rank.

`spectrum` gives the singular values of the dense attention matrix P of one
head, their cumulative energy (sum of sigma_i^2 over ||P||_F^2) and the
effective rank at a share of energy. Up to `exact_max` tokens P is
materialized and torch.linalg.svdvals gives every value. Beyond it only the
top `rank` values are computed, by randomized subspace iteration (Halko,
Martinsson & Tropp 2011, Alg. 4.4) applying P in streamed query chunks
(explorer.mechanisms.lowrank.randomized_svd). Its error is stated, not
assumed: every computed sigma_i is a lower bound of the true one, and by
Weyl's inequality each is within ||P - QQ^T P||_2 of it, a quantity bounded
with probability 1 - 1e-10 from 10 Gaussian probes (Halko eq. 4.3);
||P||_F^2 is summed exactly in the first pass, so the cumulative energy of
the computed values is a lower bound and the effective rank an upper one.

`error_curves` runs Linformer, Nystrom and the truncated SVD at a grid of k on
one head and measures, on a sample of query rows, the relative output error
||O_k - O||_F / ||O||_F and the relative Frobenius error of the weights
||W_k - P||_F / ||P||_F against dense attention.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from explorer.core import attention
from explorer.core.checks import check_qkv
from explorer.core.rows import sample_rows
from explorer.mechanisms.lowrank import MECHANISM as LOWRANK
from explorer.mechanisms.lowrank import attention_svd, randomized_svd

EXACT_MAX_N = {"cpu": 2048, "cuda": 4096}  # svdvals of 2048^2 takes about a second on a CPU, 4096^2 thirty


def exact_limit(device) -> int:
    """Largest n whose spectrum is computed exactly on this device."""
    return EXACT_MAX_N.get(torch.device(device).type, EXACT_MAX_N["cpu"])


@dataclass
class Spectrum:
    values: torch.Tensor  # [r] singular values, descending: all n when exact, the top `rank` otherwise
    total_energy: float  # ||P||_F^2 = sum of all sigma_i^2, exact for both methods
    method: str  # words: which algorithm and its settings
    n: int
    residual_fro: float  # ||P - QQ^T P||_F: energy the computed values miss (0 when exact)
    residual_bound: float  # bound on |sigma_i - computed sigma_i| for every i (0 when exact)

    @property
    def energy(self) -> torch.Tensor:
        """Cumulative share of ||P||_F^2 held by the first 1..r singular values."""
        return self.values.double().square().cumsum(0) / self.total_energy

    def effective_rank(self, share: float) -> int | None:
        """Smallest k whose top-k values hold `share` of the energy; None when beyond the computed ones."""
        if not 0 < share <= 1:
            raise ValueError(f"share={share} must lie in (0, 1]")
        reached = torch.nonzero(self.energy >= share - 1e-12)
        return int(reached[0]) + 1 if reached.numel() else None


def _head(q, k, v, head: int):
    """Head `head` of q, k (and v) as check_qkv computes with them."""
    q, k, v = check_qkv(q, k, v)
    if not 0 <= head < q.shape[0]:
        raise ValueError(f"head {head} is out of range 0..{q.shape[0] - 1}")
    pick = slice(head, head + 1)
    return q[pick], k[pick], None if v is None else v[pick]


def spectrum(q, k, head: int = 0, causal: bool = False, exact_max: int | None = None, rank: int = 256,
             oversample: int = 10, power_iters: int = 2, seed: int = 0) -> Spectrum:
    """Singular values of head `head`'s attention matrix: exact up to exact_max tokens
    (default: exact_limit of the device), else the top `rank` by the randomized method."""
    qh, kh, _ = _head(q, k, None, head)
    n = qh.shape[1]
    exact_max = exact_limit(qh.device) if exact_max is None else exact_max
    with torch.no_grad():
        if n <= exact_max:
            p = attention.weights(qh, kh, torch.arange(n, device=qh.device), causal)[0]
            values = torch.linalg.svdvals(p)
            return Spectrum(values.cpu(), float(p.double().square().sum()),
                            "exact: torch.linalg.svdvals of the materialized attention matrix", n, 0.0, 0.0)
        rank = min(rank, n)
        dec = randomized_svd(qh, kh, rank, oversample, power_iters, seed, causal)
    method = (f"randomized subspace iteration (Halko et al. 2011, Alg. 4.4): top {rank} of {n} values, "
              f"oversampling {oversample}, {power_iters} power iteration(s), streamed over query chunks")
    return Spectrum(dec.s[0, :rank].cpu(), float(dec.fro2[0]), method, n,
                    float(dec.frobenius_error(dec.s.shape[1])[0]), float(dec.spectral_error(dec.s.shape[1])[0]))


def k_grid(n: int, cap: int = 256) -> list[int]:
    """Powers of two up to min(n, cap), and min(n, cap) itself."""
    if n < 1 or cap < 1:
        raise ValueError(f"n={n} and cap={cap} must be at least 1")
    top = min(n, cap)
    return sorted({2**i for i in range(top.bit_length()) if 2**i <= top} | {top})


@dataclass
class ErrorCurves:
    ks: list[int]
    rows: torch.Tensor  # query rows measured
    output_error: dict[str, list[float]]  # method -> ||O_k - O||_F / ||O||_F on the rows, per k
    weight_error: dict[str, list[float]]  # method -> ||W_k - P||_F / ||P||_F on the rows, per k
    svd_note: str  # how the SVD was computed


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def error_curves(q, k, v, head: int = 0, ks: list[int] | None = None, max_rows: int = 512,
                 settings: dict | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ErrorCurves:
    """Error against k of the three low-rank methods on one head (bidirectional attention).

    settings: the lowrank mechanism's other parameters (projection, seed, pinv, ...);
    method and rank are what the curves vary. The SVD is computed once at max(ks)
    and truncated to each k: that is the yardstick, the best rank-k matrix found.
    progress(steps done, steps) after each method at each k, and after the SVD.
    """
    qh, kh, vh = _head(q, k, v, head)
    n = qh.shape[1]
    ks = sorted(set(ks or k_grid(n)))
    if ks[0] < 1:
        raise ValueError(f"every k must be at least 1, got {ks[0]}")
    ks = sorted({min(x, n) for x in ks})
    values = LOWRANK.validate({key: val for key, val in (settings or {}).items() if key not in ("method", "rank")})
    rows = sample_rows(n, max_rows).to(qh.device)
    with torch.no_grad():
        dense = attention.weights(qh, kh, rows)
        o_dense = dense @ vh
    out_err, w_err = {}, {}
    total, done = 2 * len(ks) + 1, 0
    for method in ("linformer", "nystrom"):
        out_err[method], w_err[method] = [], []
        for rank in ks:
            res = LOWRANK.run(qh, kh, vh, **{**values, "method": method, "rank": rank})
            with torch.no_grad():
                out_err[method].append(_relative(res.output[:, rows], o_dense))
                w_err[method].append(_relative(res.weights(rows), dense))
            done += 1
            if progress:
                progress(done, total)
    with torch.no_grad():
        dec = attention_svd(qh, kh, ks[-1], values["svd_solver"], values["oversample"],
                            values["power_iters"], values["seed"])
        out_err["svd"], w_err["svd"] = [], []
        for rank in ks:
            us, vt = dec.factors(rank)
            w = us[:, rows] @ vt
            out_err["svd"].append(_relative(w @ vh, o_dense))
            w_err["svd"].append(_relative(w, dense))
    if progress:
        progress(total, total)
    return ErrorCurves(ks, rows.cpu(), out_err, w_err, dec.note())
