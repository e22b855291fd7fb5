"""Remedies for score dilution, as query transforms: q' = remedy(q, kind, params, causal).

Each remedy multiplies query row i by a factor c_i, so every logit of that
query is scaled by c_i and any mechanism can run on the rescaled queries
unchanged (a mechanism that hashes or clusters queries sees the rescaled
ones; angular LSH is unaffected by a positive scale).

- ssmax, length-scaled softmax (Scalable-Softmax, Nakanishi 2025; the log n
  scaling of Chiang & Cholak 2022 is s = 1): c_i = s log n_i, where n_i is
  the number of keys the text offers the query, i + 1 under a causal mask and
  n otherwise (whatever a mechanism then reaches). s = 1 / log n0 leaves a
  length n0 as it was. A model trained without it was not tuned for it.
- llama4, Llama 4's attention temperature tuning (transformers'
  Llama4TextAttention, applied there on its NoPE layers only):
  c_i = 1 + attn_scale * log(floor((i + 1) / floor_scale) + 1), with i the
  query's position; 1 for every query before position floor_scale - 1.

Reference setup (Nakanishi's first figure): one logit +3, every other -2.
The last query of n keys then keeps 1 / (1 + (n - 1) e^(-5 c)) on the +3 key:
reference_weight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch

from explorer.mechanisms.base import Param, check_params

Spec = tuple[str, dict] | None  # (remedy key, params) as analyses take it; None: no remedy
Factor = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]  # (keys seen, positions, params) -> c


@dataclass(frozen=True)
class Remedy:
    """A named query scaling with its parameters (same Param declarations as a mechanism's)."""

    key: str
    title: str
    summary: str
    params: tuple[Param, ...]
    factor: Factor
    head_params: ClassVar[None] = None  # forms treat a remedy like a mechanism

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def validate(self, params: dict) -> dict:
        return check_params(self.key, self.params, params)


def _ssmax(seen, positions, params):
    return params["s"] * torch.log(seen)


def _llama4(seen, positions, params):
    return 1 + params["attn_scale"] * torch.log1p(torch.floor((positions + 1) / params["floor_scale"]))


REMEDIES: dict[str, Remedy] = {r.key: r for r in (
    Remedy("none", "No remedy", "Plain softmax: logits as the model computed them.", (),
           lambda seen, positions, params: torch.ones_like(seen)),
    Remedy("ssmax", "Length-scaled softmax (SSMax)",
           "Every logit of a query is multiplied by s log n, n the keys it sees (i + 1 under a causal mask), so "
           "a fixed logit gap keeps its weight as n grows (Scalable-Softmax, Nakanishi 2025; s = 1 is the log n "
           "scaling of Chiang & Cholak 2022).",
           (Param("s", 1.0, 0.0, 10.0, label="Scale s (logits times s log n)", step=0.05,
                  help="s = 1 / log n0 leaves a length n0 as it was; s = 1 is Chiang & Cholak's log n"),),
           _ssmax),
    Remedy("llama4", "Llama 4 attention temperature tuning",
           "Query i is multiplied by 1 + attn_scale log(floor((i + 1) / floor_scale) + 1): unchanged before "
           "position floor_scale - 1, then slowly sharper (Llama 4's NoPE layers).",
           (Param("attn_scale", 0.1, 0.0, 10.0, label="Temperature growth (Llama 4: 0.1)", step=0.01,
                  help="attn_scale: how much sharper a query gets per step of its position"),
            Param("floor_scale", 8192, 1, 10_000_000, label="Tokens per step (Llama 4: 8,192)",
                  help="floor_scale: positions per step of the temperature; shorter texts are left unchanged")),
           _llama4),
)}


def check_remedy(spec: Spec) -> tuple[str, dict]:
    """(key, params with defaults filled in) of a remedy spec; None is ("none", {})."""
    if spec is None:
        return "none", {}
    if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict)):
        raise ValueError(f"a remedy must be given as (key, params dict), got {spec!r}")
    kind, params = spec
    if kind not in REMEDIES:
        raise ValueError(f"remedy={kind!r} must be one of {list(REMEDIES)}")
    return kind, REMEDIES[kind].validate(params)


def query_scale(n: int, kind: str = "none", params: dict | None = None, causal: bool = False,
                device=None) -> torch.Tensor:
    """The factor c_i [n] (float64) that remedy `kind` multiplies query row i by."""
    kind, params = check_remedy((kind, dict(params or {})))
    positions = torch.arange(n, dtype=torch.float64, device=device)
    seen = positions + 1 if causal else torch.full_like(positions, float(n))
    return REMEDIES[kind].factor(seen, positions, params)


def remedy(q: torch.Tensor, kind: str = "none", params: dict | None = None, causal: bool = False) -> torch.Tensor:
    """Queries [heads, n, d] rescaled row by row by the remedy (q itself for "none")."""
    scale = query_scale(q.shape[1], kind, params, causal, q.device)
    return q if kind == "none" else q * scale.to(q.dtype)[None, :, None]


def apply(q: torch.Tensor, spec: Spec, causal: bool = False) -> torch.Tensor:
    """remedy() of a (key, params) spec, as the analyses take it."""
    return remedy(q, *check_remedy(spec), causal=causal)


def last_query_scale(lengths, spec: Spec) -> np.ndarray:
    """c of the last query of a sequence of each length n: position n - 1, all n keys seen (masked or not)."""
    kind, params = check_remedy(spec)
    n = torch.as_tensor(np.asarray(lengths, dtype=float), dtype=torch.float64)
    return REMEDIES[kind].factor(n, n - 1, params).numpy()


def reference_weight(lengths, spec: Spec = None, top: float = 3.0, rest: float = -2.0) -> np.ndarray:
    """Weight the last query keeps on one logit `top` among n - 1 at `rest`, under a remedy.

    Closed form 1 / (1 + (n - 1) e^(-(top - rest) c)): without a remedy
    1 / (1 + (n - 1) e^-5); with SSMax 1 / (1 + (n - 1) n^(-5 s)).
    """
    n = np.asarray(lengths, dtype=float)
    if np.any(n < 1):
        raise ValueError(f"lengths must be >= 1, got {lengths!r}")
    gap = (top - rest) * last_query_scale(n.astype(int), spec)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + (n - 1) * np.exp(-gap))


def label(spec: Spec) -> str:
    """Words for a remedy spec, for legends: its title and parameters."""
    kind, params = check_remedy(spec)
    shown = ", ".join(f"{p.name} {params[p.name]:g}" for p in REMEDIES[kind].params)
    return REMEDIES[kind].title + (f" ({shown})" if shown else "")
