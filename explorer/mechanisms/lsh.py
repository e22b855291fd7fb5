"""LSH attention as in Reformer (Kitaev, Kaiser, Levskaya 2020).

Hashing. Random rotations R [heads, head_dim, n_rounds, n_buckets/2] (the
layout of transformers' `ReformerAttention._hash_vectors`; drawn with
`torch.randn` from a CPU generator seeded `seed`, so the same numbers
transformers draws after `torch.manual_seed(seed)`, on any device).
bucket = argmax over [xR; -xR].

Sorting and chunking, exactly as Reformer's implementation lays it out: each
round's items are sorted by (bucket, position); the rounds are concatenated
into one sequence of n_rounds * items, cut into chunks, and every chunk
attends to itself and the chunk before it, cyclically. So the first chunk of
round r looks back at the last chunk of round r-1 (and round 0 at the last
round), and a single chunk looks at itself twice. When the item count is not
a multiple of the chunk size the last chunk is padded (padding is masked out);
a chunk may then straddle two rounds, as it would in Reformer's layout.
chunk_length larger than n is clamped to n: every round is then one chunk and
the result equals Reformer's fallback for short inputs (full attention, with
the self mask in shared-QK mode).

Modes:
- shared_qk=True (Reformer): `k` is ignored. Queries are q, keys are the
  unit-normalized queries (q * rsqrt(mean(q^2) + 1e-6) / sqrt(d), as
  transformers computes them), scores q . k_hat with no further scaling.
  Items are tokens (n per round). No bucket mask inside a window, as in
  Reformer. A token's own key gets the score -1e5 (not -inf, -1e3 in float16),
  so it is attended only when it has no other key.
- shared_qk=False (deviation for models with separate projections, the
  default here because it approximates the dense attention shown beside it):
  queries and keys are hashed with the same rotations. Each round sorts the
  2n items (n keys, n queries) jointly by (bucket, position, key before
  query), and cuts chunks of 2 * chunk_length items (about chunk_length
  queries and chunk_length keys, the cost of shared mode). A query attends to
  the keys of ITS OWN bucket in its chunk and the previous one, with scores
  q . k / sqrt(d) as dense. A query that finds no such key in a round gets
  nothing from that round (its log-sum-exp is -inf, so the round's weight is
  0); one that finds none in any round has zero output and zero weights.

Rounds are combined as Reformer does: out = sum_r softmax_r(lse_r) * out_r,
where lse_r is the log-sum-exp of the query's masked scores in round r.
Duplicates are not removed (Reformer's default): a key that appears twice in
a query's windows (across rounds or wrapped windows) counts twice, so the
effective weights are the lse-weighted sum, over rounds and appearances, of
each round's softmax weights; `weights` reports exactly that, summed onto
the original key positions.

causal: keys after the query are masked (-inf), as Reformer's decoder mask;
the self key is never masked by it.

structure: LSHStructure (the buckets, sorted orders and chunks of every round).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.core.device import chunk_rows
from explorer.mechanisms.base import Mechanism, Param, Result, Structure

LEN_NORM_EPS = 1e-6


@dataclass
class LSHStructure(Structure):
    """Every round's hashing, sorting and chunking, as the page draws them (all on the CPU)."""

    buckets: torch.Tensor  # [rounds, heads, n] bucket (0..n_buckets-1) of each token's query
    key_buckets: torch.Tensor  # [rounds, heads, n] of each token's key (the same tensor in shared mode)
    perm: torch.Tensor  # [rounds, heads, n] positions of the queries in sorted order (by bucket, then position)
    key_perm: torch.Tensor  # [rounds, heads, n] positions of the keys in sorted order
    query_chunk: torch.Tensor  # [rounds, heads, n] chunk (of the concatenated rounds) of each sorted query slot
    key_chunk: torch.Tensor  # [rounds, heads, n] the same for keys; a chunk boundary is where it changes
    bucket_sizes: torch.Tensor  # [rounds, heads, n_buckets] queries per bucket
    key_bucket_sizes: torch.Tensor  # [rounds, heads, n_buckets] keys per bucket
    round_weights: torch.Tensor  # [rounds, heads, n] softmax over rounds of each query's lse_r
    rotations: torch.Tensor  # [heads, head_dim, rounds, n_buckets/2]
    chunk_length: int  # after clamping to n
    items_per_chunk: int  # chunk_length, or twice it in separate-QK mode (queries and keys)
    n_chunks: int
    n_buckets: int
    n_rounds: int
    shared_qk: bool
    causal: bool


def self_mask_value(dtype: torch.dtype) -> float:
    """Reformer's score for a token's own key: low, but finite."""
    return -1e3 if dtype == torch.float16 else -1e5


def random_rotations(heads: int, head_dim: int, n_rounds: int, n_buckets: int, seed: int) -> torch.Tensor:
    """[heads, head_dim, n_rounds, n_buckets/2] standard normal, from a CPU generator."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(heads, head_dim, n_rounds, n_buckets // 2, generator=gen)


def check_rotations(rotations, shape: tuple[int, ...]) -> None:
    if not isinstance(rotations, torch.Tensor) or not rotations.is_floating_point():
        raise ValueError(f"lsh: parameter rotations must be a floating-point tensor of shape {shape}")
    if tuple(rotations.shape) != shape:
        raise ValueError(f"lsh: parameter rotations has shape {tuple(rotations.shape)}, "
                         f"expected [heads, head_dim, n_rounds, n_buckets/2] = {shape}")
    if not torch.isfinite(rotations).all():
        raise ValueError("lsh: parameter rotations must be finite")


def hash_buckets(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Bucket [rounds, heads, n] of each vector of x [heads, n, d]: argmax over [xR; -xR]."""
    rotated = torch.einsum("hnd,hdrb->rhnb", x, rotations.to(x.dtype))
    return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)


def len_norm_keys(x: torch.Tensor) -> torch.Tensor:
    """Reformer's shared-QK keys: length-normalized, then divided by sqrt(d) (about x / |x|)."""
    d = x.shape[-1]
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + LEN_NORM_EPS) / d**0.5


@dataclass
class Layout:
    """The sorted items of all rounds, concatenated and padded to whole chunks.

    pos, bucket, is_q, is_k: [heads, n_chunks * size]; bucket carries the round
    offset (round * n_buckets) and is -1 on padding. slot, key_slot:
    [rounds, heads, n] item index of each token's query / key.
    """

    pos: torch.Tensor
    bucket: torch.Tensor
    is_q: torch.Tensor
    is_k: torch.Tensor
    slot: torch.Tensor
    key_slot: torch.Tensor
    size: int
    n_chunks: int
    per_round: int


def sort_items(bq: torch.Tensor, bk: torch.Tensor | None, n_buckets: int):
    """Per round, items sorted by (bucket, position[, key before query]).

    Returns pos, bucket (with round offset), is_q, is_k, each [rounds, heads, m].
    bk None means shared QK: one item per token, both query and key.
    """
    rounds, heads, n = bq.shape
    offset = (torch.arange(rounds, device=bq.device) * n_buckets)[:, None, None]
    position = torch.arange(n, device=bq.device)
    if bk is None:
        code = (bq * n + position).sort(dim=-1).values
        is_q = torch.ones_like(code, dtype=torch.bool)
        return code % n, code // n + offset, is_q, is_q
    code = torch.cat([bk * 2 * n + 2 * position, bq * 2 * n + 2 * position + 1], dim=-1).sort(dim=-1).values
    is_q = (code % 2).bool()
    return (code % (2 * n)) // 2, code // (2 * n) + offset, is_q, ~is_q


def make_layout(bq: torch.Tensor, bk: torch.Tensor | None, n_buckets: int, size: int) -> Layout:
    pos, bucket, is_q, is_k = sort_items(bq, bk, n_buckets)
    rounds, heads, m = pos.shape
    n = bq.shape[2]
    total = rounds * m
    n_chunks = -(-total // size)
    pad = n_chunks * size - total

    def flat(t: torch.Tensor, fill) -> torch.Tensor:
        t = t.transpose(0, 1).reshape(heads, total)
        return torch.cat([t, t.new_full((heads, pad), fill)], dim=1)

    index = torch.arange(total, device=pos.device).view(rounds, 1, m).expand(rounds, heads, m)

    def slots(mask: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(rounds, heads, n + 1, dtype=torch.long, device=pos.device)
        return out.scatter_(2, torch.where(mask, pos, n), index)[..., :n]

    return Layout(flat(pos, 0), flat(bucket, -1), flat(is_q, False), flat(is_k, False),
                  slots(is_q), slots(is_k), size, n_chunks, m)


def window_items(layout: Layout, chunk: torch.Tensor) -> torch.Tensor:
    """Item indices [..., 2 * size] seen by a chunk: the previous chunk (cyclic), then itself."""
    offsets = torch.arange(layout.size, device=chunk.device)
    before = ((chunk - 1) % layout.n_chunks)[..., None] * layout.size + offsets
    return torch.cat([before, chunk[..., None] * layout.size + offsets], dim=-1)


def gather_items(t: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """t [heads, S] or [heads, S, d] at item indices [heads, ...]."""
    flat = items.reshape(items.shape[0], -1)
    if t.dim() == 2:
        return t.gather(1, flat).view(items.shape)
    return t.gather(1, flat[..., None].expand(-1, -1, t.shape[2])).view(*items.shape, t.shape[2])


def gather_tokens(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x [heads, n, d] at token positions [heads, ...] -> [heads, ..., d]."""
    flat = pos.reshape(pos.shape[0], -1, 1).expand(-1, -1, x.shape[2])
    return x.gather(1, flat).view(*pos.shape, x.shape[2])


class LSHState:
    """Everything needed to (re)compute one query's rounds: used by output, weights and reach."""

    def __init__(self, qv, kv, v, layout: Layout, shared_qk: bool, causal: bool):
        self.qv, self.kv, self.v = qv, kv, v
        self.layout, self.shared_qk, self.causal = layout, shared_qk, causal
        self.self_value = self_mask_value(qv.dtype)

    def allowed(self, q_items: torch.Tensor, w_items: torch.Tensor):
        """q_items [heads, B, A], w_items [heads, B, W] -> (allowed, is_self [heads, B, A, W] or None in
        separate-QK mode, key positions)."""
        L = self.layout
        qpos, wpos = gather_items(L.pos, q_items)[..., None], gather_items(L.pos, w_items)[..., None, :]
        is_key = gather_items(L.is_k, w_items)[..., None, :]
        ok = is_key.expand(*qpos.shape[:-1], w_items.shape[-1])
        if not self.shared_qk:
            ok = ok & (gather_items(L.bucket, q_items)[..., None] == gather_items(L.bucket, w_items)[..., None, :])
        if self.causal:
            ok = ok & (wpos <= qpos)
        is_self = (wpos == qpos) & is_key if self.shared_qk else None
        return ok, is_self, wpos.squeeze(-2)

    def probs(self, q_items: torch.Tensor, w_items: torch.Tensor):
        """Softmax over the window [heads, B, A, W], its lse [heads, B, A], allowed mask, key positions."""
        L = self.layout
        ok, is_self, wpos = self.allowed(q_items, w_items)
        qv = gather_tokens(self.qv, gather_items(L.pos, q_items))
        kv = gather_tokens(self.kv, wpos)
        s = torch.matmul(qv, kv.transpose(-1, -2)).masked_fill_(~ok, float("-inf"))
        if self.shared_qk:
            s.masked_fill_(is_self, self.self_value)
            ok = ok | is_self
        p, lse = softmax_lse(s)
        return p, lse, ok, wpos

    def items_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Output [heads, S, dv] and lse [heads, S] of every query item (a key item's row is zero, -inf:
        no token reads it), chunks in memory-sized blocks. In separate-QK mode about half of a chunk's
        items are keys: each chunk's query items are taken first as rows, and its key items first as
        window columns, up to the most any chunk holds, so the scores skip most rows and columns that
        would be masked (in shared-QK mode every item is both, and nothing is skipped)."""
        L = self.layout
        heads, dv = self.qv.shape[0], self.v.shape[2]
        out = self.v.new_zeros(heads, L.n_chunks * L.size, dv)
        lse = self.v.new_full((heads, L.n_chunks * L.size), float("-inf"))
        rows, cols = first_of_each_chunk(L, L.is_q), first_of_each_chunk(L, L.is_k)  # [heads, n_chunks, <= size]
        step = chunks_per_block(L, heads, self.qv.shape[2] + dv, self.v.device)
        for start in range(0, L.n_chunks, step):
            chunk = torch.arange(start, min(L.n_chunks, start + step), device=self.v.device)
            q_items = rows[:, chunk]
            w_items = torch.cat([cols[:, (chunk - 1) % L.n_chunks], cols[:, chunk]], dim=-1)
            p, block_lse, _, wpos = self.probs(q_items, w_items)
            where = q_items.flatten(1)
            out.scatter_(1, where[..., None].expand(-1, -1, dv),
                         torch.matmul(p, gather_tokens(self.v, wpos)).flatten(1, 2))
            lse.scatter_(1, where, block_lse.flatten(1))
        return out, lse

    def rows_rounds(self, rows: torch.Tensor, r: int):
        """Round r for the listed queries: probs [heads, Q, 2*size], allowed, key positions."""
        q_items = self.layout.slot[r][:, rows]
        w_items = window_items(self.layout, q_items // self.layout.size)
        p, _, ok, wpos = self.probs(q_items[..., None], w_items)
        return p[:, :, 0], ok[:, :, 0], wpos


def first_of_each_chunk(layout: Layout, chosen: torch.Tensor) -> torch.Tensor:
    """Item indices [heads, n_chunks, m]: each chunk's chosen items first (in their order), then the others,
    cut to m, the most chosen items any chunk holds."""
    flags = chosen.view(chosen.shape[0], layout.n_chunks, layout.size)
    order = torch.sort((~flags).to(torch.uint8), dim=-1, stable=True).indices
    most = max(1, int(flags.sum(-1).max()))
    first = torch.arange(layout.n_chunks, device=chosen.device)[:, None] * layout.size
    return first + order[..., :most]


def chunks_per_block(layout: Layout, heads: int, width: int, device) -> int:
    """How many chunks' scores and gathered windows fit the device's memory budget at once."""
    total = layout.n_chunks * layout.size
    elements = chunk_rows(total, heads, device) * total
    per_chunk = heads * layout.size * (2 * layout.size * 3 + width) + heads * 2 * layout.size * width
    return max(1, elements // per_chunk)


def softmax_lse(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax and log-sum-exp over the last axis; all -inf rows give zeros and -inf.

    Normalizing by the sum (not exp(s - lse)) keeps rows summing to 1 when the
    only finite scores sit at -1e5, where float32 spacing is about 0.01.
    """
    top = s.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(s.dtype).min)
    e = (s - top).exp_()
    z = e.sum(dim=-1, keepdim=True)
    return e.div_(z.clamp_min(torch.finfo(s.dtype).tiny)), (top + torch.log(z)).squeeze(-1)


def combine_rounds(lse: torch.Tensor) -> torch.Tensor:
    """Round weights [rounds, heads, n]: softmax over rounds of lse; 0 where no round saw a key."""
    return softmax_lse(lse.movedim(0, -1))[0].movedim(-1, 0)


class LSH(Mechanism):
    key = "lsh"
    title = "LSH attention (Reformer)"
    summary = (
        "Random rotations hash every query and key into a bucket; each round sorts the tokens by "
        "bucket, cuts the sorted order into chunks, and lets each chunk attend only to itself and "
        "the chunk before. Rounds with fresh rotations are mixed by their log-sum-exp, so a key "
        "one hash misses another can catch. Shared-QK is Reformer's own mode (keys are the "
        "normalized queries, so it computes a different function from dense); with it off, queries "
        "and keys are hashed apart and a query attends to keys of its own bucket.")
    params = (
        Param("n_buckets", 32, 2, 8192, help="buckets per round (even); Reformer uses about 2n / chunk_length",
              label="Buckets per round (even)", step=2),
        Param("n_rounds", 4, 1, 16, help="hashing rounds; more rounds catch more neighbours at more cost",
              label="Hashing rounds"),
        Param("chunk_length", 64, 1, 8192, help="sorted tokens per chunk (in separate-QK mode: queries, as many keys); clamped to n",
              label="Chunk length (sorted queries)"),
        Param("seed", 0, 0, 2**31 - 1, help="seed of the random rotations",
              label="Seed of the rotations"),
        Param("shared_qk", False, help="Reformer's shared query-key mode: keys are the normalized queries",
              label="Shared query-key (Reformer's own mode)"),
        Param("causal", False, help="mask keys after the query",
              label="Causal mask"),
        Param("rotations", None, help="explicit rotations [heads, head_dim, n_rounds, n_buckets/2]; overrides seed"),
    )

    def check_together(self, values: dict) -> None:
        if values["n_buckets"] % 2:
            raise ValueError(f"lsh: parameter n_buckets={values['n_buckets']} must be even (buckets come in +/- pairs)")

    def compute(self, q, k, v, n_buckets, n_rounds, chunk_length, seed, shared_qk, causal, rotations):
        heads, n, d = q.shape
        shape = (heads, d, n_rounds, n_buckets // 2)
        if rotations is None:
            rotations = random_rotations(*shape[:3], n_buckets, seed)
        check_rotations(rotations, shape)
        rotations = rotations.to(q.device)
        length = min(chunk_length, n)
        bq = hash_buckets(q, rotations)
        bk = None if shared_qk else hash_buckets(k, rotations)
        layout = make_layout(bq, bk, n_buckets, length if shared_qk else 2 * length)
        if shared_qk:
            state = LSHState(q, len_norm_keys(q), v, layout, True, causal)
        else:
            state = LSHState(q * d**-0.5, k, v, layout, False, causal)
        items_out, items_lse = state.items_output()
        slot = layout.slot
        out_r = torch.stack([gather_tokens(items_out, slot[r]) for r in range(n_rounds)])
        lse_r = torch.stack([items_lse.gather(1, slot[r]) for r in range(n_rounds)])
        round_w = combine_rounds(lse_r)
        output = (round_w[..., None] * out_r).sum(0)

        def weights(rows):
            w = v.new_zeros(heads, rows.numel(), n)
            for r in range(n_rounds):
                p, _, wpos = state.rows_rounds(rows, r)
                w.scatter_add_(2, wpos, p * round_w[r][:, rows, None])
            return w

        def reach(rows):
            hits = v.new_zeros(heads, rows.numel(), n)
            for r in range(n_rounds):
                _, ok, wpos = state.rows_rounds(rows, r)
                hits.scatter_add_(2, wpos, ok.to(hits.dtype))
            return hits > 0

        structure = self.describe(bq, bk, layout, round_w, rotations, n_buckets, length, shared_qk, causal)
        return Result(output, weights, structure=structure, reach_fn=reach,
                      cost=lsh_cost(heads, n, d, v.shape[2], layout, n_buckets, n_rounds, shared_qk))

    @staticmethod
    def describe(bq, bk, layout, round_w, rotations, n_buckets, length, shared_qk, causal) -> LSHStructure:
        kb = bq if bk is None else bk
        position = torch.arange(bq.shape[2], device=bq.device)

        def order(b: torch.Tensor) -> torch.Tensor:  # positions sorted by (bucket, position)
            return (b * b.shape[2] + position).sort(dim=-1).values % b.shape[2]

        def sizes(b: torch.Tensor) -> torch.Tensor:
            return b.new_zeros(*b.shape[:2], n_buckets).scatter_add_(2, b, torch.ones_like(b))

        perm, key_perm = order(bq), order(kb)
        return LSHStructure(
            buckets=bq.cpu(), key_buckets=kb.cpu(), perm=perm.cpu(), key_perm=key_perm.cpu(),
            query_chunk=(layout.slot.gather(2, perm) // layout.size).cpu(),
            key_chunk=(layout.key_slot.gather(2, key_perm) // layout.size).cpu(),
            bucket_sizes=sizes(bq).cpu(), key_bucket_sizes=sizes(kb).cpu(),
            round_weights=round_w.cpu(), rotations=rotations.cpu(),
            chunk_length=length, items_per_chunk=layout.size, n_chunks=layout.n_chunks,
            n_buckets=n_buckets, n_rounds=bq.shape[0], shared_qk=shared_qk, causal=causal)


def lsh_cost(heads, n, d, dv, layout: Layout, n_buckets, n_rounds, shared_qk) -> dict:
    """Hashing, per-chunk scores and the weighted sum, counted as computed (padding and all)."""
    hashed = 1 if shared_qk else 2
    items = layout.n_chunks * layout.size
    window = 2 * layout.size
    flops = (2 * heads * hashed * n * d * n_rounds * n_buckets // 2
             + 2 * heads * items * window * (d + dv))
    # queries gathered per item, keys and values once per chunk window, one score per (item, window key)
    bytes_ = 4 * heads * (n * (2 * d + dv) + items * (d + window) + layout.n_chunks * window * (d + dv)
                          + n_rounds * n * (dv + 1))
    return {"flops": flops, "bytes": bytes_}


MECHANISM = LSH()

