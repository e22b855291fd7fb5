"""Score dilution: how a query's attention spreads thinner as the text grows.

Real text: for prefixes of the text on a log grid of lengths L, each sampled
query row of the prefix is summarised by its max weight, entropy (nats, and
normalised by log L: the log of the keys the text offers the query, i + 1 for
row i under a causal mask, whatever a mechanism then reaches), effective
support exp(entropy) and the mass on its top-k keys; per length we keep the median and the
interquartile band (25%, 75%) over the sampled rows of every head. Dense is
exact softmax (explorer.core.attention); each mechanism runs on the prefix and is
read through `res.weights(rows)`. Effective weights of some mechanisms are
signed (Linformer), so every statistic is taken of |w| / sum |w|; for
non-negative rows that sum to one (dense and most mechanisms) this is w itself.

Query sample (`sample`): "spread" takes up to `queries` evenly spaced rows of
the prefix (first and last included), the view of the whole prefix;
"last" takes its last `queries` rows, the rows that see the most context
under a causal mask. Rows stream in chunks, so memory is O(chunk * L).

Theory: a uniform row puts 1/n on every key (entropy log n); a needle whose
logit beats n - 1 noise keys by `margin` keeps e^margin / (e^margin + n - 1).
With Gaussian noise logits of std sigma, `needle_weight` is the exact
expected weight (by quadrature, see there). Plugging the expected
denominator e^margin + (n - 1) e^(sigma^2 / 2) in instead
(`needle_weight_lognormal`) underestimates it (Jensen), badly while n - 1 is
not >> e^(sigma^2) (sigma 3, n 22, margin 4: 0.028 against 0.141); it is drawn
only where `lognormal_valid` finds it within 5%.

Controlled experiment (`needle_experiment`): explorer.core.synthetic plants one
needle, the last query (n - 1) to a key at relative position `key_at`
(default the middle, so its distance grows with n); noise scales the other
keys, so their logits are N(0, noise^2) and exactly 0 at noise 0, where dense
must match the formula exactly.

Remedies (explorer.analysis.remedies): every analysis here takes an optional
`remedy` spec (key, params): the queries of each measured sequence are
rescaled before dense and every mechanism run on them, with n the keys the
text offers each query (the `causal` argument), not what a mechanism
reaches. A needle's logits then scale by the last query's factor c, so its
theory is needle_weight at margin c m and noise c sigma.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis import experiment, remedies
from explorer.analysis.experiment import Mechanisms, Progress
from explorer.core.checks import check_qkv
from explorer.core.device import chunk_rows
from explorer.core.rows import sample_rows
from explorer.core.synthetic import synthetic
METRICS = ("max_weight", "entropy", "entropy_norm", "support", "topk_mass")
LABELS = {"max_weight": "max weight", "entropy": "entropy (nats)", "entropy_norm": "entropy / log(prefix length)",
          "support": "effective support exp(H)", "topk_mass": "top-k mass"}
SAMPLES = ("spread", "last")
QUANTILES = (0.25, 0.5, 0.75)


# ---------------------------------------------------------------- validation

def int_at_least(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    return int(value)


def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number")
    return float(value)


def _check_noise(noise) -> float:
    noise = _finite("noise", noise)
    if noise < 0:
        raise ValueError(f"noise={noise} must be >= 0")
    return noise


def check_lengths(lengths, n: int | None = None) -> list[int]:
    """Sorted unique prefix lengths, each an integer in 1..n."""
    values = [int_at_least("length", x, 1) for x in np.asarray(lengths, dtype=object).reshape(-1).tolist()]
    if not values:
        raise ValueError("lengths must hold at least one prefix length")
    if n is not None and max(values) > n:
        raise ValueError(f"length {max(values)} is longer than the text (n={n})")
    return sorted(set(values))


def prefix_lengths(n: int, points: int = 12, start: int = 8) -> list[int]:
    """About `points` log-spaced prefix lengths from min(start, n) to n (unique integers, n included)."""
    n = int_at_least("n", n, 1)
    points = int_at_least("points", points, 1)
    start = min(int_at_least("start", start, 1), n)
    if points == 1:
        return [n]
    grid = np.geomspace(start, n, points).round().astype(int)
    return sorted(set(grid.tolist()) | {n})


# ---------------------------------------------------------------- theory

def _check_n(n) -> np.ndarray:
    arr = np.asarray(n, dtype=float)
    if np.any(arr < 1) or not np.all(np.isfinite(arr)):
        raise ValueError(f"n must be >= 1, got {n!r}")
    return arr


def _shaped(w: np.ndarray, like):
    """w in the shape of the n it was computed for: a float for a scalar n."""
    return float(w.reshape(-1)[0]) if np.ndim(like) == 0 else w.reshape(np.shape(like))


# Standard normal nodes for E over one noise logit: a trapezoid rule on a smooth, fast-decaying
# integrand (its error falls faster than any power of the spacing), and the step in s = log E.
_Z = np.linspace(-10.0, 10.0, 2001)
_Z_WEIGHT = np.exp(-_Z**2 / 2) / np.exp(-_Z**2 / 2).sum()
_S_STEP = 0.05


def _log_laplace(t: np.ndarray, noise: float, block: int = 512) -> np.ndarray:
    """log E[exp(-t e^X)], X ~ N(0, noise^2): the log-normal's Laplace transform, precise near 0 and 1."""
    out = np.empty(len(t))
    for a in range(0, len(t), block):  # [block, nodes] at a time
        with np.errstate(over="ignore"):
            x = t[a : a + block, None] * np.exp(noise * _Z)[None]
        miss = -np.expm1(-x) @ _Z_WEIGHT  # 1 - L, exact when L is near 1
        keep = np.exp(-x) @ _Z_WEIGHT  # L, exact when L is near 0
        out[a : a + block] = np.where(miss < 0.5, np.log1p(-np.minimum(miss, 0.5)), np.log(np.maximum(keep, 1e-300)))
    return out


def needle_weight_lognormal(n, margin: float, noise: float = 0.0):
    """The plug-in e^margin / (e^margin + (n - 1) e^(noise^2 / 2)): the expected denominator put in.

    By Jensen an underestimate of the expected weight; within 5% only where
    lognormal_valid says so (once n - 1 >> e^(noise^2) the noise sum concentrates).
    """
    margin, noise = _finite("margin", margin), _check_noise(noise)
    arr = _check_n(n)
    rest = np.log(np.maximum(arr - 1, 1e-300)) + noise**2 / 2 - margin  # the exponent in logs, capped below
    return _shaped(np.where(arr > 1, 1.0 / (1.0 + np.exp(np.minimum(rest, 700.0))), 1.0), n)


def needle_weight(n, margin: float, noise: float = 0.0):
    """Expected weight E[e^m / (e^m + sum_{j<n-1} e^(X_j))], X_j ~ N(0, noise^2) iid, m = margin.

    With a/(a + S) = integral_0^inf a e^(-t(a + S)) dt and t = e^(s - m) this is
    exactly integral exp(s - e^s) L(e^(s - m))^(n - 1) ds, L(t) = E[exp(-t e^X)];
    both integrals are taken by quadrature (n 22, noise 3, margin 4: 0.14131
    against 0.14127 +- 0.00014 from 10^6 Monte Carlo draws; n 2, 3 within 1e-5
    of direct integrals). noise 0: e^m / (e^m + n - 1).
    """
    margin, noise = _finite("margin", margin), _check_noise(noise)
    arr = _check_n(n)
    if noise == 0:
        return needle_weight_lognormal(n, margin)
    rest = arr.reshape(-1) - 1
    # below s_lo the Gumbel density exp(s - e^s) holds < e^-12 of the plug-in's weight (itself a lower
    # bound); the floor -250 only matters for weights under e^-238, which no chart can show
    low = -np.logaddexp(0.0, np.log(max(rest.max(), 1.0)) + noise**2 / 2 - margin) - 12.0
    s = np.arange(min(-10.0, max(low, -250.0)), 4.0 + _S_STEP / 2, _S_STEP)
    density = np.exp(s - np.exp(s))
    with np.errstate(over="ignore"):
        log_l = _log_laplace(np.exp(s - margin), noise)
    w = np.exp(rest[:, None] * log_l[None]) @ (density / density.sum())
    return _shaped(np.where(rest > 0, np.minimum(w, 1.0), 1.0), n)


PLUGIN_TOL = 0.05  # relative error up to which the plug-in is drawn


def _within(plug, exact, tol: float = PLUGIN_TOL):
    return np.abs(np.asarray(plug) / np.asarray(exact) - 1) <= tol


def lognormal_valid(n, margin: float, noise: float, tol: float = PLUGIN_TOL):
    """Where the plug-in needle_weight_lognormal is within `tol` (relative) of the exact expectation."""
    ok = _within(needle_weight_lognormal(n, margin, noise), needle_weight(n, margin, noise), tol)
    return bool(ok) if np.ndim(n) == 0 else ok


def uniform_row(lengths, topk: int = 8) -> dict[str, np.ndarray]:
    """Every statistic of a uniform row 1/n at each length."""
    n = np.asarray(check_lengths(lengths), dtype=float)
    return {"max_weight": 1 / n, "entropy": np.log(n), "entropy_norm": np.where(n > 1, 1.0, 0.0),
            "support": n, "topk_mass": np.minimum(topk, n) / n}


def needle_row(lengths, margin: float, topk: int = 8) -> dict[str, np.ndarray]:
    """Every statistic of a noise-free needle row: e^margin on one key, 1 on each of n - 1 others."""
    margin = _finite("margin", margin)
    n = np.asarray(check_lengths(lengths), dtype=float)
    top = needle_weight(n, margin)
    rest = (1 - top) / np.maximum(n - 1, 1)  # weight of each noise key
    entropy = -top * np.log(np.maximum(top, 1e-300)) - (n - 1) * rest * np.log(np.maximum(rest, 1e-300))
    entropy = np.maximum(entropy, 0.0)
    kk = np.minimum(topk, n)
    # for margin < 0 the needle is the smallest weight, not the largest
    mass = np.where(top >= rest, top + (kk - 1) * rest, np.where(kk < n, kk * rest, 1.0))
    return {"max_weight": np.maximum(top, rest), "entropy": entropy,
            "entropy_norm": np.where(n > 1, entropy / np.log(np.maximum(n, 2)), 0.0),
            "support": np.exp(entropy), "topk_mass": mass}


def theory_rows(lengths, margin: float, topk: int = 8) -> dict[str, dict[str, np.ndarray]]:
    """The two reference rows drawn beside measured curves, by display name."""
    return {"uniform row (theory)": uniform_row(lengths, topk),
            f"needle, margin {margin:g} (theory)": needle_row(lengths, margin, topk)}


# ---------------------------------------------------------------- measured rows

def row_stats(w: torch.Tensor, visible: torch.Tensor, topk: int = 8) -> dict[str, torch.Tensor]:
    """Statistics of weight rows w [..., L] (of |w| / sum |w|); visible [rows]: keys each row sees.

    Normalised entropy is H / log(visible), 0 for a row that sees one key.
    An empty row (a query that attended to nothing, as LSH can leave one) has
    every statistic 0, support included: it spreads over no key at all.
    """
    p = w.abs()
    total = p.sum(-1)
    p = p / total.clamp_min(1e-30)[..., None]
    entropy = (-(p * torch.log(p.clamp_min(1e-30))).sum(-1)).clamp_min(0)
    logs = torch.log(visible.to(p.dtype)).expand_as(entropy)
    norm = torch.where(logs > 0, entropy / logs.clamp_min(1e-30), torch.zeros_like(entropy))
    return {"max_weight": p.amax(-1), "entropy": entropy, "entropy_norm": norm,
            "support": torch.where(total > 0, entropy.exp(), torch.zeros_like(entropy)),
            "topk_mass": p.topk(min(topk, p.shape[-1]), dim=-1).values.sum(-1)}


def query_rows(length: int, queries: int, sample: str = "spread") -> torch.Tensor:
    """The measured query rows of a prefix of `length` tokens (see the module docstring)."""
    if sample not in SAMPLES:
        raise ValueError(f"sample={sample!r} must be one of {list(SAMPLES)}")
    if sample == "last":
        return torch.arange(max(0, length - queries), length)
    return sample_rows(length, queries)


def _streamed(weights_fn, rows: torch.Tensor, causal: bool, length: int, heads: int, topk: int) -> dict:
    """row_stats over every head and row, chunk rows at a time: values [heads * rows]."""
    parts = {m: [] for m in METRICS}
    for block in rows.split(chunk_rows(length, heads, rows.device)):
        visible = block + 1 if causal else torch.full_like(block, length)
        for m, x in row_stats(weights_fn(block), visible, topk).items():
            parts[m].append(x)
    return {m: torch.cat(x, dim=1).flatten().float().cpu() for m, x in parts.items()}


def _band(values: torch.Tensor) -> list[float]:
    return torch.quantile(values, torch.tensor(QUANTILES)).tolist()


@dataclass
class Curves:
    """Median and interquartile band of each statistic per prefix length.

    bands[name][metric]: array [len(lengths), 3] of (q25, median, q75).
    """

    lengths: list[int]
    bands: dict[str, dict[str, np.ndarray]]
    rows: list[int]  # query rows measured at each length
    topk: int
    sample: str
    causal: dict[str, bool]  # whether each curve was masked causally
    empty: dict[str, np.ndarray]  # share of measured rows with no weight at all, per length
    remedy: tuple = ("none", {})  # the remedy (key, params) the queries were rescaled by

    def frame(self):
        """Tidy table: one line per (mechanism, length, metric): q25, median, q75 and the empty-row share."""
        import pandas as pd

        lines = []
        for name, metrics in self.bands.items():
            for metric, band in metrics.items():
                for i, (q25, med, q75) in enumerate(band.tolist()):
                    lines.append({"mechanism": name, "length": self.lengths[i], "queries": self.rows[i],
                                  "metric": metric, "q25": q25, "median": med, "q75": q75,
                                  "empty_share": float(self.empty[name][i])})
        return pd.DataFrame(lines)

    @classmethod
    def merge(cls, *parts: Curves) -> Curves:
        """One Curves from several measured on the same prefixes (e.g. dense once, each mechanism apart)."""
        return cls(**merged(list(parts), ("lengths", "rows", "topk", "sample", "remedy"),
                             ("bands", "causal", "empty")))

    def table(self, metric: str, theory: dict[str, dict[str, np.ndarray]] | None = None):
        """The data behind one chart: per length, each curve's q25, median, q75 and each theory line."""
        import pandas as pd

        if metric not in METRICS:
            raise ValueError(f"metric={metric!r} must be one of {list(METRICS)}")
        out = pd.DataFrame({"length": self.lengths, "queries": self.rows})
        for name, metrics in self.bands.items():
            for j, q in enumerate(("q25", "median", "q75")):
                out[f"{name} {q}"] = metrics[metric][:, j]
        for name, values in (theory or {}).items():
            out[name] = values[metric]
        return out


def merged(parts: list, same: tuple[str, ...], fields: tuple[str, ...]) -> dict:
    """Field values of dataclass results measured alike, with their per-curve dicts united."""
    if not parts:
        raise ValueError("nothing to merge")
    for part in parts[1:]:
        for name in same:
            if getattr(part, name) != getattr(parts[0], name):
                raise ValueError(f"cannot merge results measured with different {name}")
    out = {name: getattr(parts[0], name) for name in same}
    out.update({name: {key: value for part in parts for key, value in getattr(part, name).items()}
                for name in fields})
    return out


def dilution_curves(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths,
                    mechanisms: Mechanisms | None = None, causal: bool = False, queries: int = 128,
                    sample: str = "spread", topk: int = 8, progress: Progress = None,
                    dense: bool = True, remedy: remedies.Spec = None) -> Curves:
    """Dilution statistics of dense and each mechanism over prefixes q[:, :L], k[:, :L], v[:, :L].

    mechanisms: display name -> (Mechanism, params). causal masks dense and is
    passed to mechanisms that take it unless their params say otherwise.
    dense=False leaves the exact reference out (to merge with one computed once).
    remedy: (key, params) rescaling each prefix's queries (module docstring).
    progress(done, total) is told after each (length, mechanism) step.
    """
    q, k, v = check_qkv(q, k, v)
    heads, n, _ = q.shape
    lengths = check_lengths(lengths, n)
    queries = int_at_least("queries", queries, 1)
    topk = int_at_least("topk", topk, 1)
    rows = [query_rows(length, queries, sample).to(q.device) for length in lengths]
    curves = experiment.curves(mechanisms, dense)
    remedy = remedies.check_remedy(remedy)
    bands = {name: {m: np.empty((len(lengths), 3)) for m in METRICS} for name in curves}
    empty = {name: np.zeros(len(lengths)) for name in curves}
    masked = {}
    for i, name, att in experiment.measured(lengths, lambda length: (q[:, :length], k[:, :length], v[:, :length]),
                                            curves, causal, remedy, progress=progress):
        masked[name] = att.causal
        stats = _streamed(att.weights, rows[i], att.causal, lengths[i], heads, topk)
        for m, values in stats.items():
            bands[name][m][i] = _band(values)
        empty[name][i] = float((stats["support"] == 0).float().mean())
    return Curves(lengths, bands, [int(r.numel()) for r in rows], topk, sample, masked, empty, remedy)


# ---------------------------------------------------------------- controlled experiment

def _remedied(fn, lengths, margin: float, noise: float, remedy: remedies.Spec) -> np.ndarray:
    """fn(n, c m, c sigma) at each length, c the last query's remedy factor (1 without one)."""
    n = np.asarray(lengths, dtype=float)
    scale = remedies.last_query_scale(n, remedy)
    out = np.empty(len(n))
    for c in np.unique(scale):
        at = scale == c
        out[at] = fn(n[at], c * margin, c * noise)
    return out


@dataclass
class Needle:
    """Weight the needle query (n - 1) puts on its key, per length and head."""

    lengths: list[int]
    margin: float
    noise: float
    key_at: float
    keys: list[int]  # needle key position at each length
    weight: dict[str, np.ndarray]  # name -> [len(lengths), heads]
    reach: dict[str, np.ndarray]  # name -> bool [len(lengths), heads]
    remedy: tuple = ("none", {})  # the remedy (key, params) the queries were rescaled by

    @classmethod
    def merge(cls, *parts: Needle) -> Needle:
        """One Needle from several run on the same settings."""
        return cls(**merged(list(parts), ("lengths", "margin", "noise", "key_at", "keys", "remedy"),
                             ("weight", "reach")))

    def expected(self, noise: float | None = None, lognormal: bool = False) -> np.ndarray:
        """Theory at each length under this remedy: the exact expectation (or the plug-in) at `noise`
        (default this experiment's)."""
        fn = needle_weight_lognormal if lognormal else needle_weight
        return _remedied(fn, self.lengths, self.margin, self.noise if noise is None else noise, self.remedy)

    def theory(self) -> dict[str, np.ndarray]:
        """Lines to draw: noise 0 (exact) and, when noise > 0, the exact expectation at this noise and
        the log-normal plug-in where it is within 5% of it (NaN elsewhere: the line breaks)."""
        out = {"theory, noise 0": self.expected(0.0)}
        if self.noise > 0:
            exact, plug = self.expected(), self.expected(lognormal=True)
            out[f"theory, noise {self.noise:g} (exact expectation)"] = exact
            out[f"plug-in e^(noise²/2), noise {self.noise:g} (where within 5%)"] = np.where(
                _within(plug, exact), plug, np.nan)
        return out

    def frame(self):
        """Tidy table: one line per (mechanism, length) with the head-mean weight, reach, and theory."""
        import pandas as pd

        exact, plug, flat = self.expected(), self.expected(lognormal=True), self.expected(0.0)
        lines = []
        for name, w in self.weight.items():
            for i, length in enumerate(self.lengths):
                lines.append({"mechanism": name, "n": length, "needle_key": self.keys[i],
                              "weight": float(w[i].mean()), "reach": float(self.reach[name][i].mean()),
                              "theory_noise0": float(flat[i]), "theory_gaussian": float(exact[i]),
                              "plugin_lognormal": float(plug[i]),
                              "plugin_within_5pct": bool(_within(plug[i], exact[i]))})
        return pd.DataFrame(lines)


def needle_experiment(lengths, margin: float = 8.0, noise: float = 1.0, mechanisms: Mechanisms | None = None,
                      seed: int = 0, heads: int = 1, head_dim: int = 32, key_at: float = 0.5,
                      progress: Progress = None, dense: bool = True, remedy: remedies.Spec = None) -> Needle:
    """Plant one needle (query n - 1 -> key round(key_at * (n - 1))) at every n and read its weight.

    Dense is exact softmax; each mechanism runs on the same synthetic q, k, v
    (q rescaled by `remedy`, unmasked) and also reports whether it can reach
    the key at all (res.reach).
    """
    lengths = check_lengths(lengths)
    margin, noise = _finite("margin", margin), _check_noise(noise)
    key_at = _finite("key_at", key_at)
    if not 0 <= key_at <= 1:
        raise ValueError(f"key_at={key_at} must lie in [0, 1] (relative position of the needle key)")
    curves = experiment.curves(mechanisms, dense)
    remedy = remedies.check_remedy(remedy)
    weight = {name: np.empty((len(lengths), heads)) for name in curves}
    reach = {name: np.empty((len(lengths), heads), dtype=bool) for name in curves}
    keys = [round(key_at * (n - 1)) for n in lengths]

    def planted(n: int):
        doc = synthetic(n, heads=heads, head_dim=head_dim, seed=seed, needles=[(n - 1, round(key_at * (n - 1)))],
                        margin=margin, noise=noise)
        return doc.q, doc.k, doc.v

    for i, name, att in experiment.measured(lengths, planted, curves, remedy=remedy, progress=progress):
        row = torch.tensor([lengths[i] - 1])
        weight[name][i] = att.weights(row)[:, 0, keys[i]].cpu().numpy()
        reach[name][i] = att.reach(row)[:, 0, keys[i]].cpu().numpy()
    return Needle(lengths, margin, noise, key_at, keys, weight, reach, remedy)
