"""Seeded Gaussian queries, keys and values, with optional planted needles.

Every query has norm sqrt(head_dim) (a Gaussian direction) and every key is
N(0, noise^2 I), so given its query each key's logit q . k / sqrt(d) is
exactly N(0, noise^2), independently across keys: the setting of the
dilution theory (explorer.analysis.dilution.needle_weight). Unnormalised
Gaussian queries would give each query its own variance noise^2 |q|^2 / d.
A needle key is q * margin / sqrt(d), so its own query's logit is exactly
`margin`; another query i sees it at margin * cos(q_i, q), about
N(0, margin^2 / d), not N(0, noise^2).
"""
from __future__ import annotations

import math

import torch

from explorer.core.device import check_fits
from explorer.core.doc import Doc

_TOKEN_BYTES = 256  # a token's name, offsets and text in Python objects, about


def _needle_pairs(needles, n: int, gen: torch.Generator) -> list[tuple[int, int]]:
    if isinstance(needles, int) and not isinstance(needles, bool):
        if needles < 0 or (needles and n < 2):
            raise ValueError(f"needles={needles}: need a count >= 0 and n >= 2 to plant any")
        if 2 * needles > n:
            raise ValueError(f"needles={needles} cannot be planted in {n} tokens: each needs its own query and key, "
                             f"so at most {n // 2}")
        picks = torch.randperm(n, generator=gen)[: 2 * needles].view(-1, 2).sort(dim=1).values
        return [(int(b), int(a)) for a, b in picks.tolist()]  # query after its key
    try:
        pairs = [(int(qi), int(ki)) for qi, ki in needles]
    except (TypeError, ValueError) as err:
        raise ValueError(f"needles must be a count or a list of (query, key) positions, got {needles!r}") from err
    for qi, ki in pairs:
        if not (0 <= qi < n and 0 <= ki < n):
            raise ValueError(f"needle (query {qi}, key {ki}) lies outside 0..{n - 1}")
    return pairs


def synthetic(n: int, heads: int = 4, head_dim: int = 32, seed: int = 0, needles=0,
              margin: float = 8.0, noise: float = 1.0) -> Doc:
    """A Doc of n tokens with no model behind it, for controlled experiments.

    needles: a count (placed at seeded positions, each query after its key)
    or an explicit list of (query, key) positions.
    """
    for name, value, low in (("n", n, 1), ("heads", heads, 1), ("head_dim", head_dim, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    for name, value in (("margin", margin), ("noise", noise)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}={value!r} must be a finite number")
    if noise < 0:
        raise ValueError(f"noise={noise} must be >= 0")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed!r} must be an integer in 0..2^63-1")
    check_fits(n * (3 * heads * head_dim * 4 + _TOKEN_BYTES), torch.device("cpu"), f"synthetic(n={n:,})")
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(heads, n, head_dim, generator=gen)
    q = q * (head_dim**0.5 / q.norm(dim=-1, keepdim=True).clamp_min(1e-30))
    k = torch.randn(heads, n, head_dim, generator=gen) * noise
    v = torch.randn(heads, n, head_dim, generator=gen)
    pairs = _needle_pairs(needles, n, gen)
    for qi, ki in pairs:
        k[:, ki] = q[:, qi] * (margin / head_dim**0.5)
    tokens = [f"t{i}" for i in range(n)]
    starts = [0]
    for tok in tokens[:-1]:
        starts.append(starts[-1] + len(tok) + 1)
    offsets = [(s, s + len(t)) for s, t in zip(starts, tokens)]
    return Doc(text=" ".join(tokens), tokens=tokens, offsets=offsets, q=q, k=k, v=v,
               model="synthetic", note=f"seeded Gaussian vectors (seed {seed}), {len(pairs)} needle(s)",
               needles=pairs)
