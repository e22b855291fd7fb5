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
`fit_scales` decides which maps share a scale: one shared range is only honest while every map
fills a fair part of it, so a signed map, or one that would fill under MIN_SHARE of the shared
range, gets a scale of its own and no panel is left flat by another's range.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.figures.colours import title_of

DECADES = 6  # the deepest a log scale reaches below its top
MIN_SHARE = 0.5  # a map whose own range fills less of a shared range than this gets its own
SAMPLE = 100_000  # values a percentile is taken from (evenly strided)
ROBUST = (0.01, 0.99)  # the percentiles of a robust range
MODES = ("log", "relative", "linear")
LABELS = {"log": "log10 weight", "relative": "log10(weight × keys seen), 0 = uniform", "linear": "weight",
          "signed": "weight (signed)"}


@dataclass(frozen=True)
class Scale:
    """pool: "mean" or "max"; mode: a MODES entry, or "signed" (centred on zero: zmin = -zmax);
    zmin/zmax: the range; robust: the range is the 1st-99th percentile (signed: of |weight|); causal: a row sees keys up to itself, and window: only that many back
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
        if self.robust and self.signed:
            label += f"<br>99th percentile of |weight|: ±{self.zmax:.3g}"
        elif self.robust:
            label += f"<br>1st–99th percentile: {self.zmin:.3g} to {self.zmax:.3g}"
        return label

    @property
    def span(self) -> str:
        """The range in words: ±top when signed, decades on a log scale, else low to high."""
        if self.signed:
            return f"signed, ±{self.zmax:.2g}"
        if self.mode in ("log", "relative"):
            return f"{self.width:.1f} decades"
        return f"{self.zmin:.2g} to {self.zmax:.2g}"

    @property
    def width(self) -> float:
        """How much of the colour bar the range takes (decades on a log scale)."""
        return self.zmax - self.zmin

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
    if diverging and any(is_signed(m) for m in mats):
        top = value_range([np.abs(transform(m, "signed", [])) for m in mats], "linear", robust)[1]
        return Scale(pool, "signed", -top, top, robust=robust)
    edges = row_edges or [list(range(torch.as_tensor(m).shape[0] + 1)) for m in mats]
    values = [transform(m, mode, e, n, causal, window) for m, e in zip(mats, edges)]
    return Scale(pool, mode, *value_range(values, mode, robust), robust=robust, causal=causal, window=window)


def is_signed(matrix) -> bool:
    """Whether a map holds negative weights (Linformer's effective weights can)."""
    return bool((torch.as_tensor(matrix) < 0).any())


def fit_scales(mats: dict, pool: str, mode: str = "log", diverging: bool = False, robust: bool = False,
               row_edges: dict | None = None, n: int | None = None, causal: bool = False,
               window: int | None = None) -> list[tuple[tuple[str, ...], Scale]]:
    """Which maps (name -> [row bins, key bins] values) share which scale, as (names, scale) groups
    in the maps' order; arguments as fit_scale's, row_edges by name.

    With `diverging`, a signed map gets a signed scale of its own; the others share one range
    unless a map's own range would fill less than MIN_SHARE of it: then the narrowest gets its own
    and the rest are fitted again, until every map sharing a range fills a fair part of it.
    """
    def fit(names) -> Scale:
        edges = [row_edges[k] for k in names] if row_edges else None
        return fit_scale([mats[k] for k in names], pool, mode, diverging, robust, edges, n, causal, window)

    signed = [k for k in mats if diverging and is_signed(mats[k])]
    groups = [((k,), fit([k])) for k in signed]
    shared = [k for k in mats if k not in signed]
    while shared:
        scale = fit(shared)
        own = {k: fit([k]) for k in shared}
        narrowest = min(shared, key=lambda k: own[k].width)
        if len(shared) == 1 or scale.width <= 0 or own[narrowest].width >= MIN_SHARE * scale.width:
            groups.append((tuple(shared), scale))
            break
        groups.append(((narrowest,), own[narrowest]))
        shared.remove(narrowest)
    order = list(mats)
    return sorted(groups, key=lambda group: order.index(group[0][0]))


def describe(groups: list[tuple[tuple[str, ...], Scale]]) -> str:
    """What a caption adds when maps do not all share one scale: each group and its range."""
    if len(groups) < 2:
        return ""
    ranges = "; ".join(f"{' and '.join(title_of(k) for k in names)}: {scale.span}" for names, scale in groups)
    return f"Colour ranges apart, so no map is flattened by another's ({ranges})."
