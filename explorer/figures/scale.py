"""One colour scale for several attention maps: pooling, what the colours mean, and the range.

Attention is heavy-tailed, and on a long text a pooled map can span less than a decade, so
there are three ways to colour it:
- "log": log10 of the weight;
- "relative": log10 of the weight times the keys the query can see (its row's length, i + 1
  under a causal mask, fewer in a sliding window): 0 is exactly uniform, +1 ten times the uniform share, -1 a tenth, so
  a nearly uniform map still shows where it departs from uniform;
- "linear": the weight itself.
The range is either robust (the 1st to 99th percentile of the values drawn: a few extreme
bins, such as the diagonal, do not flatten everything else) or the extremes, reaching at most
DECADES below the top on a log scale. `suggest` picks, per map, the colouring that shows its
structure. Signed effective weights (Linformer's) get a linear scale centred on zero instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DECADES = 6  # the deepest a log scale reaches below its top
SAMPLE = 100_000  # values a percentile is taken from (evenly strided)
ROBUST = (0.01, 0.99)  # the percentiles of a robust range
MODES = ("log", "relative", "linear")
LABELS = {"log": "log10 weight", "relative": "log10(weight × keys seen), 0 = uniform", "linear": "weight",
          "signed": "weight (signed)"}


@dataclass(frozen=True)
class Scale:
    """pool: "mean" or "max"; mode: a MODES entry, or "signed" (centred on zero); zmin/zmax: the
    range (None lets the figure fit it, as signed maps do around zero); robust: the range is the
    1st-99th percentile; causal: a row sees keys up to itself, and window: only that many back
    (each side, bidirectional) in the model's sliding window (both for "relative")."""

    pool: str
    mode: str
    zmin: float | None
    zmax: float | None
    robust: bool = False
    causal: bool = False
    window: int | None = None

    @property
    def signed(self) -> bool:
        return self.mode == "signed"

    @property
    def label(self) -> str:
        """What the colour bar says: the values, and the range when it is clipped."""
        label = LABELS[self.mode]
        if self.robust and self.zmin is not None:
            label += f"<br>1st–99th percentile: {self.zmin:.3g} to {self.zmax:.3g}"
        return label

    def values(self, matrix, row_edges: list[int], n: int | None = None) -> np.ndarray:
        """The numbers a map colours: a pooled [row bins, key bins] matrix transformed by the mode."""
        return transform(matrix, self.mode, row_edges, n, self.causal, self.window)


def keys_seen(row_edges: list[int], n: int, causal: bool, window: int | None = None) -> np.ndarray:
    """Keys a query of each row bin can see, the bin's mean: n, or under a causal mask i + 1;
    within a sliding window, only the window's keys (window back, or window each side)."""
    e = np.asarray(row_edges, dtype=np.int64)
    if window is None:
        if not causal:
            return np.full(len(e) - 1, float(n))
        return (e[:-1] + e[1:] - 1) / 2 + 1
    i = np.arange(e[0], e[-1])
    first = np.maximum(i - (window - 1 if causal else window), 0)
    last = i if causal else np.minimum(i + window, n - 1)
    return np.add.reduceat((last - first + 1).astype(float), e[:-1] - e[0]) / np.diff(e)


def transform(matrix, mode: str, row_edges: list[int], n: int | None = None, causal: bool = False,
              window: int | None = None) -> np.ndarray:
    """log10 weight, log10 of weight x keys seen, or the weight (signed: as it is)."""
    z = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=float)
    if mode in ("linear", "signed"):
        return z
    logged = np.log10(np.clip(z, 1e-30, None))
    logged[z <= 0] = np.nan  # no weight at all: left uncoloured, not the bottom of the scale
    if mode == "log":
        return logged
    if mode != "relative":
        raise ValueError(f"mode={mode!r} must be one of {MODES}")
    n = row_edges[-1] if n is None else n
    return logged + np.log10(keys_seen(row_edges, n, causal, window))[:, None]


def _finite(values: list[np.ndarray]) -> np.ndarray:
    flat = np.concatenate([v[np.isfinite(v)].ravel() for v in values]) if values else np.zeros(0)
    return flat[:: max(1, flat.size // SAMPLE)] if flat.size else flat


def value_range(values: list[np.ndarray], mode: str, robust: bool) -> tuple[float, float]:
    """(low, high) of the values maps share (-12..0 when none is finite): robust, the 1st to 99th
    percentile; else up to the top value, from 0 (linear) or from the 1st percentile but no
    deeper than DECADES below the top (log)."""
    flat = _finite(values)
    if not flat.size:
        return (0.0, 1.0) if mode == "linear" else (-12.0, 0.0)
    low, high = (float(x) for x in np.quantile(flat, ROBUST))
    if robust and high > low:
        return low, high
    top = float(flat.max())
    if mode == "linear":
        return 0.0, top or 1.0
    return max(top - DECADES, low), top


def suggest(matrix, row_edges: list[int], n: int | None = None, causal: bool = False) -> str:
    """The colouring that shows a map's structure: "log" when its bins span at least a decade
    between the 1st and 99th percentile, else "relative" (a nearly uniform map)."""
    logged = _finite([transform(matrix, "log", row_edges, n, causal)])
    if logged.size < 2:
        return "log"
    low, high = np.quantile(logged, ROBUST)
    return "log" if high - low >= 1.0 else "relative"


def fit_scale(mats: list, pool: str, mode: str = "log", diverging: bool = False, robust: bool = False,
              row_edges: list[list[int]] | None = None, n: int | None = None, causal: bool = False,
              window: int | None = None) -> Scale:
    """The scale every map of `mats` (one pooling's [row bins, key bins] values) is drawn on.

    mode: a MODES entry (or the legacy True/False for log/linear); row_edges: each map's row bin
    edges ("relative" needs them to know the keys each row sees).
    """
    if isinstance(mode, bool):
        mode = "log" if mode else "linear"
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be one of {MODES}")
    if diverging and any(bool((torch.as_tensor(m) < 0).any()) for m in mats):
        return Scale(pool, "signed", None, None)
    edges = row_edges or [list(range(torch.as_tensor(m).shape[0] + 1)) for m in mats]
    values = [transform(m, mode, e, n, causal, window) for m, e in zip(mats, edges)]
    return Scale(pool, mode, *value_range(values, mode, robust), robust=robust, causal=causal, window=window)
