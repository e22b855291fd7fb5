"""Relative-position biases over dense attention: T5 buckets, MPNet's learned buckets, ALiBi,
Shaw et al. and RoPE.

Every query still attends to every key; only the score changes with the
distance j - i (key position minus query position):

    t5     q_i.k_j / sqrt(d) + values[t5_bucket(j - i), h]      (Raffel et al. 2020)
    mpnet  the same, with the values MPNet learned                (Song et al. 2020)
    alibi  q_i.k_j / sqrt(d) - slope_h * |j - i|                 (Press et al. 2022)
    shaw   q_i.(k_j + a_clip(j - i, -K, K)) / sqrt(d)            (Shaw et al. 2018)
    rope   (R_i q_i).(R_j k_j) / sqrt(d), R_p rotates pair t by p * theta^(-2t/d)  (Su et al. 2021)

One class per scheme (`SCHEMES`, by `kind`) holds that position term for one
run. It is computed per query chunk from a table by distance (T5, ALiBi), from
q_i . a per chunk (Shaw) or from q and k rotated once (RoPE): memory
O(n * head_dim + chunk * n), never n x n.

Choices and deviations, each stated:
- The q, k come from another model, so scores keep its 1/sqrt(d) scale
  (T5 itself folds that scale into its weights); `scale` multiplies the
  position term (1 = as published) to show what a stronger bias does.
- T5 values come from a checkpoint (`t5_values`, its relative_attention_bias
  weight [num_buckets, heads]; `t5_checkpoint_values` reads one), else from
  a `profile`: "seeded" N(0, 1) per bucket and head, "decay"
  -log(1 + distance) * (head + 1) / heads, or "local" 0 within 2^(head mod 4)
  tokens and -8 beyond. Causal runs use T5's decoder bucketing
  (bidirectional=False), as T5's decoder does.
- MPNet's values are all-mpnet-base-v2's own (Apache-2.0), extracted once by
  scripts/extract_mpnet_bias.py into assets/position_bias/mpnet.json
  (`learned_table`): 32 buckets both ways, max distance 128, 12 heads. Head h of
  a run gets MPNet's head h mod 12; causal runs mask keys after the query and
  keep the values MPNet learned for the past.
- ALiBi is causal in the paper (-slope * (i - j) on the past); the
  bidirectional form uses |j - i|, as encoder adaptations do.
- Shaw: one seeded N(0, 1) table a^K of 2K + 1 rows of head_dim, shared by all
  heads as in the paper. The value term a^V is left out: with it the output
  is no longer weights @ v, and the page shows what the weights did.
- RoPE pairs adjacent dimensions (2t, 2t + 1) as RoFormer does; an odd last
  dimension is left unrotated.
- Head-dependent biases (slopes, T5 values, profiles) are indexed by the
  model's head number head_offset + h among total_heads, so one head run
  alone gets the bias it has among all heads.

A run's structure is a `Structure`: the position term against distance and
over the first tokens. For any other view call `bias_curve` / `bias_map`
(explorer.analysis.relpos); `attention_by_distance` there measures any
attention's mean weight by |distance|, and `rope_decay` the mean RoPE score
against distance for the actual q, k.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from explorer.core.attention import scores as content_scores
from explorer.core.bias import relative_bucket
from explorer.core.bundled import load_error
from explorer.core.device import chunk_rows
from explorer.core.rows import row_chunks, sample_rows
from explorer.mechanisms.base import Mechanism, Param, Result

PROFILES = ("seeded", "decay", "local")
_PAIR_BUDGET = 2**24  # elements of one gathered [heads, rows, distances, d] block
_WINDOW = 128  # tokens of the default bias window in `structure`
_LOCAL_PENALTY = -8.0  # "local" profile: bias beyond the head's window
_DISTANCE_LIMIT = 2**20  # profiles: buckets first reached farther than this get this distance
LEARNED = Path(__file__).resolve().parents[2] / "assets" / "position_bias" / "mpnet.json"


# ---------------------------------------------------------------- T5 buckets


def _bucket_error(name: str, value, what: str) -> ValueError:
    return ValueError(f"relpos: parameter {name}={value!r} {what}")


def check_buckets(bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    """Settings where T5's bucketing is defined: >= 1 exact bucket and a log range above it."""
    half = num_buckets // 2 if bidirectional else num_buckets
    if half < 2:
        need = 4 if bidirectional else 2
        raise _bucket_error("num_buckets", num_buckets,
                            f"must be at least {need} ({'bidirectional' if bidirectional else 'causal'} T5 bucketing)")
    if max_distance <= half // 2:
        raise _bucket_error("max_distance", max_distance,
                            f"must exceed the {half // 2} exactly bucketed distances")


def t5_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128) -> torch.Tensor:
    """T5's bucket of each relative position (key position - query position), settings checked:
    explorer.core.bias.relative_bucket, the bucketing a captured T5-style or MPNet layer uses too."""
    check_buckets(bidirectional, num_buckets, max_distance)
    return relative_bucket(relative_position, bidirectional, num_buckets, max_distance)


def bucket_distances(bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Smallest |distance| that falls in each bucket, looked for up to 2^20 (buckets none reaches: the limit)."""
    reach = min(max_distance, _DISTANCE_LIMIT) + 1
    rel = torch.arange(-reach, reach + 1)
    out = torch.full((num_buckets,), reach, dtype=torch.long)
    return out.scatter_reduce_(0, t5_bucket(rel, bidirectional, num_buckets, max_distance), rel.abs(), "amin")


def t5_profile(profile: str, heads: torch.Tensor, total_heads: int, bidirectional: bool,
               num_buckets: int, max_distance: int, seed: int) -> torch.Tensor:
    """Bucket values [num_buckets, len(heads)] of a profile for the model heads listed."""
    if profile == "seeded":
        cols = [torch.randn(num_buckets, generator=torch.Generator().manual_seed(seed * 100_003 + int(h)))
                for h in heads]
        return torch.stack(cols, dim=1)
    dist = bucket_distances(bidirectional, num_buckets, max_distance).float()[:, None]
    if profile == "decay":
        return -torch.log1p(dist) * (heads.float() + 1) / total_heads
    window = 2.0 ** (heads % 4).float()
    return torch.where(dist <= window, 0.0, _LOCAL_PENALTY)


@dataclass(frozen=True)
class LearnedTable:
    """A relative-position table a model learned, as its asset holds it (see `learned_table`)."""

    values: torch.Tensor  # [num_buckets, heads] float32, as the model's relative_attention_bias.weight
    max_distance: int
    bidirectional: bool
    model: str
    licence: str
    check: dict  # the model's own bias on a short text: text, distances [D], bias [heads][D]

    @property
    def num_buckets(self) -> int:
        return self.values.shape[0]


@functools.cache
def learned_table() -> LearnedTable:
    """MPNet's table (all-mpnet-base-v2), from assets/position_bias/mpnet.json."""
    asset = json.loads(LEARNED.read_text(encoding="utf-8"))
    return LearnedTable(torch.tensor(asset["table"], dtype=torch.float32), asset["max_distance"],
                        asset["bidirectional"], asset["model"], asset["licence"], asset["check"])


def _checked_t5_values(values, num_buckets: int, need_heads: int) -> torch.Tensor:
    """A finite float table [num_buckets, >= need_heads] (a tensor, or nested lists as JSON carries it)."""
    def bad(shape) -> ValueError:
        return ValueError(f"relpos: parameter t5_values (shape {shape}) must be a finite float table "
                          f"[num_buckets={num_buckets}, heads >= {need_heads}]")

    if not isinstance(values, torch.Tensor):
        try:
            values = torch.tensor(values, dtype=torch.float32)
        except (TypeError, ValueError) as err:
            raise bad(type(values).__name__) from err
    shape = tuple(values.shape)
    if values.dim() != 2 or not values.is_floating_point() or shape[0] != num_buckets or shape[1] < need_heads:
        raise bad(shape)
    if not torch.isfinite(values).all():
        raise bad(shape)
    return values


def t5_checkpoint_values(name_or_path: str, decoder: bool = False,
                         allow_download: bool = False) -> tuple[torch.Tensor, dict]:
    """relative_attention_bias.weight [num_buckets, heads] of a T5 checkpoint and its bucket settings.

    Works from a local folder or the Hugging Face cache; nothing is downloaded unless
    `allow_download`. Reads only the one tensor from safetensors files. ValueError when the
    checkpoint cannot be read.
    """
    from functools import partial

    from transformers import AutoConfig
    from transformers.utils import cached_file

    local = not allow_download
    try:
        config = AutoConfig.from_pretrained(name_or_path, local_files_only=local)
        if not hasattr(config, "relative_attention_num_buckets"):
            raise ValueError(f"{name_or_path!r} is not a T5-style checkpoint (no relative_attention_num_buckets)")
        stack = "decoder" if decoder else "encoder"
        key = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        values = _read_tensor(name_or_path, key, partial(cached_file, local_files_only=local))
    except (OSError, KeyError, TypeError) as err:
        raise load_error(name_or_path, err, local, what="T5 checkpoint") from err
    settings = {"num_buckets": config.relative_attention_num_buckets,
                "max_distance": getattr(config, "relative_attention_max_distance", 128),
                "heads": config.num_heads}
    return values.float(), settings


def _read_tensor(name_or_path: str, key: str, cached_file) -> torch.Tensor:
    path = cached_file(name_or_path, "model.safetensors", _raise_exceptions_for_missing_entries=False)
    if path:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            if key in f.keys():
                return f.get_tensor(key)
            raise ValueError(f"{name_or_path!r} has no tensor {key}")
    path = cached_file(name_or_path, "pytorch_model.bin")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if key not in state:
        raise ValueError(f"{name_or_path!r} has no tensor {key}")
    return state[key]


# ---------------------------------------------------------------- ALiBi slopes


def _power_of_two_slopes(n: int) -> list[float]:
    return [2.0 ** (-8.0 * i / n) for i in range(1, n + 1)]


def alibi_slopes(n_heads) -> torch.Tensor:
    """ALiBi's head slopes (float64 [n_heads]): 2^(-8i/n) for a power of two n.

    Otherwise, as in the paper's code: the slopes of the largest power of two
    below n, then every other slope of twice that count, to fill n.
    """
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads={n_heads!r} must be an integer >= 1")
    base = 1 << (n_heads.bit_length() - 1)
    slopes = _power_of_two_slopes(base) + _power_of_two_slopes(2 * base)[0::2][: n_heads - base]
    return torch.tensor(slopes, dtype=torch.float64)


# ---------------------------------------------------------------- Shaw and RoPE


def shaw_embeddings(clip: int, head_dim: int, seed: int) -> torch.Tensor:
    """Seeded relative key embeddings a^K [2 * clip + 1, head_dim]; row clip + m is distance m."""
    return torch.randn(2 * clip + 1, head_dim, generator=torch.Generator().manual_seed(seed))


def rope_rotate(x: torch.Tensor, theta: float = 10000.0, positions: torch.Tensor | None = None) -> torch.Tensor:
    """x [heads, n, d] with pair (2t, 2t + 1) at position p turned by p * theta^(-2t/d)."""
    pairs = x.shape[-1] // 2
    if pairs == 0:
        return x.clone()
    if positions is None:
        positions = torch.arange(x.shape[1], device=x.device)
    freq = theta ** (-torch.arange(pairs, device=x.device, dtype=torch.float32) * 2 / (2 * pairs))
    angle = positions.to(torch.float32)[:, None] * freq[None, :]
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    even, odd = x[..., 0 : 2 * pairs : 2], x[..., 1 : 2 * pairs : 2]
    out = x.clone()
    out[..., 0 : 2 * pairs : 2] = even * cos - odd * sin
    out[..., 1 : 2 * pairs : 2] = even * sin + odd * cos
    return out


def rope_bound(head_dim: int, theta: float, distances) -> torch.Tensor:
    """RoFormer's content-free decay: (1 / (d/2)) sum_j |sum_{t<j} e^{i m theta_t}| per distance m."""
    pairs = head_dim // 2
    m = torch.as_tensor(distances, dtype=torch.float64)
    if pairs == 0:
        return torch.ones_like(m)  # nothing rotates: no decay
    freq = theta ** (-torch.arange(pairs, dtype=torch.float64) * 2 / (2 * pairs))
    phase = torch.polar(torch.ones(m.numel(), pairs, dtype=torch.float64), m[:, None] * freq[None, :])
    return phase.cumsum(dim=1).abs().mean(dim=1)


# ---------------------------------------------------------------- the position term, by distance


class ModelHeads(NamedTuple):
    """Which heads of the model a run holds: their numbers, and how many the model has."""

    numbers: torch.Tensor
    total: int


def model_heads(heads: int, head_offset: int, total_heads: int) -> ModelHeads:
    """The model's heads of `heads` given from head_offset, in a model of total_heads (0: just enough)."""
    total = total_heads or head_offset + heads
    if total < head_offset + heads:
        raise ValueError(f"relpos: parameter total_heads={total_heads} must be 0 or at least "
                         f"head_offset + heads = {head_offset + heads}")
    return ModelHeads(torch.arange(head_offset, head_offset + heads), total)


def offsets(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Distances j - i [len(rows), c] for keys cols: shared [c] or per row [len(rows), c]."""
    return (cols if cols.dim() == 2 else cols[None, :]) - rows[:, None]


def pair_scores(qx: torch.Tensor, kx: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """qx_i . kx_j / sqrt(d) [heads, len(rows), c] for keys cols (shared [c], or per row [rows, c])."""
    rsd = qx.shape[-1] ** -0.5
    if cols.dim() == 1:
        return torch.matmul(qx[:, rows], kx[:, cols].transpose(1, 2)) * rsd
    heads, _, d = qx.shape
    step = max(1, _PAIR_BUDGET // max(1, heads * cols.shape[1] * d))
    parts = [(qx[:, rows[s : s + step], None, :] * kx[:, cols[s : s + step]]).sum(-1)
             for s in range(0, rows.numel(), step)]
    return torch.cat(parts, dim=1) * rsd


def mean_by_distance(pair_fn, n: int, distances: torch.Tensor, max_rows: int, device) -> torch.Tensor:
    """Mean of pair_fn(rows, cols) [heads, S, D] over sampled query rows i where key i + m exists."""
    rows = sample_rows(n, max_rows).to(device)
    cols = rows[:, None] + distances.to(device)[None, :]
    valid = ((cols >= 0) & (cols < n)).float()
    term = pair_fn(rows, cols.clamp(0, n - 1))
    return (term * valid.to(term.dtype)).sum(1) / valid.sum(0).clamp_min(1).to(term.dtype)


def curve_distances(lo: int, hi: int, count: int = 401) -> torch.Tensor:
    """Signed distances in [lo, hi]: all of them when they fit, else linear plus log-spaced near 0."""
    if hi < lo:
        raise ValueError(f"empty distance range {lo}..{hi}")
    if hi - lo + 1 <= count:
        return torch.arange(lo, hi + 1)
    reach = max(abs(lo), abs(hi))
    near, logs = min(32, count // 8), count // 4
    mags = torch.cat([torch.arange(0, near + 1).double(),
                      torch.logspace(0, math.log10(reach), logs, dtype=torch.float64)]).round().long()
    linear = torch.linspace(lo, hi, max(2, count - 2 * (near + 1 + logs)), dtype=torch.float64).round().long()
    cand = torch.cat([mags, -mags, linear])
    return cand[(cand >= lo) & (cand <= hi)].unique()


def default_distances(n: int, causal: bool) -> torch.Tensor:
    """The curve's distances over n tokens: every key a query may see (the past only when causal)."""
    return curve_distances(-(n - 1), 0 if causal else n - 1)


# ---------------------------------------------------------------- the schemes


class Scheme:
    """The position term of one run's scores, built once for q, k and the scheme's parameters.

    `scores(rows)` gives the full scores of a query chunk, `pairs(rows, cols)`
    the position term alone and `curve(distances)` the term against distance,
    so the run, the structure and the page's views all read one computation.
    """

    kind = ""  # the value of the `kind` parameter
    title = ""  # how a form names the scheme
    reads: tuple[str, ...] = ()  # the constructor's arguments after q, k, causal: parameters, and `heads`
    params: tuple[Param, ...] = ()  # the parameters only this scheme reads, as the mechanism declares them
    exact = False  # the term depends on j - i alone, so `curve` is exact (else a mean over query rows)

    def __init__(self, q: torch.Tensor, k: torch.Tensor, causal: bool):
        self.q, self.k, self.causal = q, k, causal
        self.n = q.shape[1]

    @staticmethod
    def check(values: dict) -> None:
        """Rules between the scheme's parameters: ValueError naming the parameter."""

    @staticmethod
    def buckets(values: dict, distances: torch.Tensor) -> torch.Tensor | None:
        """The bucket of each distance, for the bucketed kinds (a chart shows it), else None."""
        return None

    def scores(self, rows: torch.Tensor) -> torch.Tensor:
        """Scores [heads, len(rows), n] with the position term, -inf on masked keys."""
        s = content_scores(self.q, self.k, rows, self.causal)
        return s.add_(self.pairs(rows, torch.arange(self.n, device=rows.device)))

    def pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Position term [heads, len(rows), c] for keys cols: shared [c] or per row [len(rows), c]."""
        raise NotImplementedError

    def output(self, rows: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The rows' output [heads, len(rows), dv]: the softmax of their scores times v."""
        return torch.softmax(self.scores(rows), dim=-1) @ v

    def keys(self, rows: torch.Tensor) -> int:
        """How many keys the rows may see from the start: up to the last row when causal, else all."""
        return int(rows.max()) + 1 if self.causal else self.n

    def fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, bias=None):
        """SDPA's fused kernel over the keys the rows see, with an additive bias [heads, len(rows), keys]
        (or none) and the causal edge: the same output as `output`, without its separate score tensors."""
        keys = self.keys(rows)
        mask = None
        if self.causal:
            mask = torch.arange(keys, device=rows.device)[None, :] <= rows[:, None]
            mask = mask if bias is None else bias.masked_fill(~mask, float("-inf"))
        elif bias is not None:
            mask = bias
        mask = mask if mask is None or mask.dim() == 2 else mask[None]
        # [1, heads, ...]: the layout that reaches the fused kernel (a 3-D call takes the unfused path)
        return torch.nn.functional.scaled_dot_product_attention(q[None, :, rows], k[None, :, :keys], v[None, :, :keys],
                                                                attn_mask=mask)[0]

    def curve(self, distances: torch.Tensor, max_rows: int = 256) -> torch.Tensor:
        """Position term [heads, D] at each distance: the mean over sampled query rows."""
        return mean_by_distance(self.pairs, self.n, distances, max_rows, self.q.device)

    def cost(self) -> tuple[int, int]:
        """(flops, bytes) the position term adds to dense attention."""
        raise NotImplementedError

    def details(self, distances: torch.Tensor) -> dict:
        """The scheme's own fields of `Structure`, for the curve at `distances`."""
        return {}


class DistanceBias(Scheme):
    """A term of j - i alone (T5, ALiBi): one table over every distance, so the curve is exact and
    row i's bias is a strided slice of the table, never an n x n gather."""

    exact = True

    def __init__(self, q, k, causal, scale: float):
        super().__init__(q, k, causal)
        self.scale = scale
        self.table = self.curve(torch.arange(-(self.n - 1), self.n, device=q.device))  # [heads, 2n - 1]

    def bias(self, distance: torch.Tensor) -> torch.Tensor:
        """The published term [heads, *distance.shape], before `scale`."""
        raise NotImplementedError

    def curve(self, distances, max_rows=256):
        return self.bias(distances.to(self.q.device)) * self.scale

    def scores(self, rows):
        return content_scores(self.q, self.k, rows, self.causal).add_(self.bias_rows(rows, self.n))

    def bias_rows(self, rows, keys: int):
        """The term [heads, len(rows), keys] over the first keys: row i's is the table slice starting at
        distance -i, a strided view, no index."""
        return self.table.unfold(1, self.n, 1)[:, self.n - 1 - rows, :keys]

    def output(self, rows, v):
        return self.fused(self.q, self.k, v, rows, self.bias_rows(rows, self.keys(rows)))

    def pairs(self, rows, cols):
        return self.table[:, offsets(rows, cols) + self.n - 1]

    def cost(self):
        heads, n, _ = self.q.shape
        return heads * n * n, 4 * heads * (2 * n - 1)  # add the gathered bias; the table


class T5Buckets(DistanceBias):
    """T5: a learned value per head for each bucket of j - i (relative_attention_bias).

    Causal runs bucket one-sided (bidirectional=False), as T5's decoder does.
    """

    kind, title = "t5", "T5 buckets"
    reads = ("heads", "scale", "num_buckets", "max_distance", "profile", "t5_values", "seed")
    params = (
        Param("num_buckets", 32, 2, 1024, help="T5: buckets (split over both directions when bidirectional)",
              label="T5: buckets"),
        Param("max_distance", 128, 1, 10**7, help="T5: distances beyond this share the last bucket",
              label="T5: max distance (tokens)"),
        Param("profile", "seeded", choices=PROFILES,
              help="T5 without a checkpoint: seeded random, log-distance decay, or local window",
              label="T5 bucket values", choice_text={"seeded": "seeded random", "decay": "log-distance decay", "local": "local window"}),
        Param("t5_values", None, help="T5: bucket values [num_buckets, heads] from a checkpoint (tensor or lists)"),
    )

    def __init__(self, q, k, causal, heads: ModelHeads, scale, num_buckets, max_distance, profile, t5_values, seed):
        self.bidirectional = not causal
        self.num_buckets, self.max_distance = num_buckets, max_distance
        if t5_values is None:
            values = t5_profile(profile, heads.numbers, heads.total, self.bidirectional, num_buckets,
                                max_distance, seed)
        else:
            values = _checked_t5_values(t5_values, num_buckets, int(heads.numbers[-1]) + 1)
            values = values.index_select(1, heads.numbers.to(values.device))
        self.values = values.to(q.device, q.dtype)  # [num_buckets, heads]
        super().__init__(q, k, causal, scale)

    @staticmethod
    def check(values):
        check_buckets(not values["causal"], values["num_buckets"], values["max_distance"])

    @staticmethod
    def buckets(values, distances):
        return t5_bucket(distances, not values["causal"], values["num_buckets"], values["max_distance"])

    def bucket(self, distance: torch.Tensor) -> torch.Tensor:
        return t5_bucket(distance, self.bidirectional, self.num_buckets, self.max_distance)

    def bias(self, distance):
        return self.values[self.bucket(distance)].movedim(-1, 0)

    def details(self, distances):
        return {"t5_values": self.values.cpu(), "buckets": self.bucket(distances)}


class LearnedBuckets(T5Buckets):
    """MPNet: T5's buckets (both ways) with the values all-mpnet-base-v2 learned (`learned_table`).

    The table is the model's, so causal runs keep its bidirectional bucketing and mask the future.
    """

    kind, title = "mpnet", "learned: MPNet"
    reads = ("heads", "scale")
    params = ()

    def __init__(self, q, k, causal, heads: ModelHeads, scale):
        table = learned_table()
        self.bidirectional, self.num_buckets, self.max_distance = table.bidirectional, table.num_buckets, \
            table.max_distance
        self.values = table.values[:, heads.numbers % table.values.shape[1]].to(q.device, q.dtype)
        DistanceBias.__init__(self, q, k, causal, scale)

    @staticmethod
    def check(values):
        pass

    @staticmethod
    def buckets(values, distances):
        table = learned_table()
        return relative_bucket(distances, table.bidirectional, table.num_buckets, table.max_distance)


class ALiBi(DistanceBias):
    """ALiBi: -m * |j - i|, a fixed slope m per head (`alibi_slopes`), no learned parameter."""

    kind, title = "alibi", "ALiBi"
    reads = ("heads", "scale")

    def __init__(self, q, k, causal, heads: ModelHeads, scale):
        self.slopes = alibi_slopes(heads.total)[heads.numbers].to(q.device, q.dtype)
        super().__init__(q, k, causal, scale)

    def bias(self, distance):
        return -self.slopes.view(-1, *[1] * distance.dim()) * distance.abs().to(self.slopes.dtype)

    def details(self, distances):
        return {"slopes": self.slopes.cpu()}


class Shaw(Scheme):
    """Shaw et al.: q_i . a^K_ij / sqrt(d) with a^K_ij = w^K_clip(j - i, k), one table w^K for all heads.

    The term depends on the query, so its curve is a mean over query rows.
    """

    kind, title = "shaw", "Shaw et al."
    reads = ("scale", "clip", "seed")
    params = (Param("clip", 16, 0, 16384, help="Shaw: relative distances clipped to [-clip, clip]",
                    label="Shaw: clip distance (tokens)"),)

    def __init__(self, q, k, causal, scale, clip, seed):
        super().__init__(q, k, causal)
        self.clip = clip
        self.w_k = shaw_embeddings(clip, q.shape[-1], seed).to(q.device, q.dtype) * scale  # [2k + 1, d]

    def pairs(self, rows, cols):
        qa = torch.matmul(self.q[:, rows], self.w_k.T) * self.q.shape[-1] ** -0.5  # [heads, rows, 2k + 1]
        index = offsets(rows, cols).clamp(-self.clip, self.clip) + self.clip
        return torch.gather(qa, 2, index.expand(qa.shape[0], -1, -1))

    def cost(self):
        heads, n, d = self.q.shape
        return 2 * heads * n * self.w_k.shape[0] * d + heads * n * n, 4 * self.w_k.numel()

    def details(self, distances):
        return {"clip": self.clip}


class RoPE(Scheme):
    """RoPE: q and k rotated by their positions (`rope_rotate`) before the dot product.

    No term is added, so `scale` does not apply; the term shown is the rotated
    score minus the content score.
    """

    kind, title = "rope", "RoPE"
    reads = ("theta",)
    params = (Param("theta", 10000.0, 1.0, 1e12, help="RoPE: base of the rotation frequencies",
                    label="RoPE: base θ"),)

    def __init__(self, q, k, causal, theta):
        super().__init__(q, k, causal)
        self.theta = theta
        self.q_rot, self.k_rot = rope_rotate(q, theta), rope_rotate(k, theta)

    def scores(self, rows):
        return content_scores(self.q_rot, self.k_rot, rows, self.causal)

    def output(self, rows, v):
        return self.fused(self.q_rot, self.k_rot, v, rows)

    def pairs(self, rows, cols):
        return pair_scores(self.q_rot, self.k_rot, rows, cols) - pair_scores(self.q, self.k, rows, cols)

    def cost(self):
        heads, n, d = self.q.shape
        return 6 * heads * n * d, 4 * 2 * heads * n * d  # rotate q and k; the rotated copies

    def details(self, distances):
        return {"theta": self.theta}


SCHEMES: dict[str, type[Scheme]] = {s.kind: s for s in (T5Buckets, LearnedBuckets, ALiBi, Shaw, RoPE)}
KINDS = tuple(SCHEMES)


@dataclass
class Structure:
    """What the relative-position page draws of a run: the term against distance and over the first tokens."""

    kind: str  # the scheme, a key of SCHEMES
    causal: bool  # keys after the query masked
    bias_exact: bool  # the term depends on distance alone (t5, mpnet, alibi); else `bias` is a mean over query rows
    distances: torch.Tensor  # LongTensor [D]: signed distances j - i of the default curve
    bias: torch.Tensor  # [heads, D]: (mean) position term of the score at those distances
    window: tuple[int, int, int, int]  # (r0, r1, c0, c1): the first up-to-128 tokens
    bias_window: torch.Tensor  # [heads, r1 - r0, c1 - c0]: the position term there
    slopes: torch.Tensor | None = None  # alibi: [heads] slope of each head
    t5_values: torch.Tensor | None = None  # t5, mpnet: [num_buckets, heads] value of each bucket
    buckets: torch.Tensor | None = None  # t5, mpnet: [D] bucket of each of `distances`
    clip: int | None = None  # shaw: distances clipped to [-clip, clip]
    theta: float | None = None  # rope: base of the rotation frequencies


# ---------------------------------------------------------------- the mechanism


class RelativePosition(Mechanism):
    key = "relpos"
    title = "Relative position"
    summary = (
        "The same dense attention over the text, with a score that also depends on how far the key "
        "is from the query: T5's bucketed bias, the buckets MPNet learned, ALiBi's linear penalty, "
        "Shaw's clipped relative embeddings or RoPE's rotation of queries and keys. The bias is "
        "computed only for what is drawn: the distances on the curve and the window on the map.")
    params = (
        Param("kind", "t5", choices=KINDS, help="which relative-position scheme",
              label="Scheme", choice_text={kind: s.title for kind, s in SCHEMES.items()}),
        Param("causal", False, help="mask keys after the query (decoder form; T5 then buckets one-sided)",
              label="Causal (decoder form)"),
        Param("scale", 1.0, 0.0, 1000.0, help="multiplier on the position term (1 = as published; not RoPE)",
              label="Position term scale (1: as published)"),
        *(p for scheme in SCHEMES.values() for p in scheme.params),
        Param("seed", 0, 0, 2**31 - 1, help="seed of T5's seeded profile and Shaw's embeddings",
              label="Seed of the T5 values and Shaw's embeddings"),
        Param("head_offset", 0, 0, 4096, help="model head number of the first head given (one-head runs)"),
        Param("total_heads", 0, 0, 4096, help="heads of the model, for ALiBi slopes (0: head_offset + heads)"),
    )
    head_params = ("head_offset", "total_heads")

    def check_together(self, values: dict) -> None:
        SCHEMES[values["kind"]].check(values)

    def position_term(self, q, k, params: dict) -> Scheme:
        """Validated parameters -> the run's scheme, built for q and k (also used by the page's views)."""
        values = self.validate(params)
        given = {**values, "heads": model_heads(q.shape[0], values["head_offset"], values["total_heads"])}
        scheme = SCHEMES[values["kind"]]
        return scheme(q, k, values["causal"], **{name: given[name] for name in scheme.reads})

    def compute(self, q, k, v, **params):
        term = self.position_term(q, k, params)
        heads, n, d = q.shape

        def weights(rows):
            return torch.softmax(term.scores(rows), dim=-1)

        out = torch.empty(heads, n, v.shape[2], device=q.device, dtype=v.dtype)
        for rows in row_chunks(n, chunk_rows(n, heads, q.device, buffers=6), q.device):
            out[:, rows] = term.output(rows, v)
        return Result(out, weights, structure=self._structure(term), cost=self._cost(term, v.shape[2]),
                      reach_fn=_reach(heads, n, term.causal, q.device))

    @staticmethod
    def _structure(term: Scheme) -> Structure:
        distances = default_distances(term.n, term.causal)
        w = min(term.n, _WINDOW)
        window = torch.arange(w, device=term.q.device)
        return Structure(kind=term.kind, causal=term.causal, bias_exact=term.exact, distances=distances,
                         bias=term.curve(distances).cpu(), window=(0, w, 0, w),
                         bias_window=term.pairs(window, window).cpu(), **term.details(distances))

    @staticmethod
    def _cost(term: Scheme, dv: int) -> dict:
        heads, n, d = term.q.shape
        flops, extra_bytes = term.cost()
        return {"flops": 2 * heads * n * n * (d + dv) + 5 * heads * n * n + flops,  # matmuls, softmax, the term
                "bytes": 4 * heads * (2 * n * n + n * (2 * d + 2 * dv)) + extra_bytes}


def _reach(heads: int, n: int, causal: bool, device):
    """Every key is in reach (the past only when causal): a bias lowers weights, never removes keys."""
    def reach(rows):
        keys = torch.arange(n, device=device)
        ok = keys[None, :] <= rows[:, None] if causal else torch.ones(rows.numel(), n, dtype=torch.bool, device=device)
        return ok.expand(heads, -1, -1)
    return reach


MECHANISM = RelativePosition()
