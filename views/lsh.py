"""LSH attention (Reformer): buckets over the text and over the map, bucket sizes,
one round's sorted-and-chunked matrix, which of dense's top-k pairs LSH catches,
and how recall varies when the rotations are drawn again."""
import streamlit as st

from explorer.analysis import lsh
from explorer.core.rows import sample_rows
from explorer.figures import lsh as figs
from explorer.mechanisms import REGISTRY
from ui import charts, compute, fidelity, forms, maps, settings
from ui.cache import computation, report

MECH = REGISTRY["lsh"]
PAIR_ROWS = 2000  # queries whose dense top-k pairs are checked
REHASH_ROWS = 512  # queries measured per re-hash
ROUND = settings.Setting("lsh_round", 0, lo=0, hi=MECH.params[1].hi - 1)
SEEDS = settings.Setting("lsh_seeds", 5, lo=2, hi=32)
SPAN = settings.Setting("lsh_span", maps.WHOLE, url=False)
settings.declare(ROUND, SEEDS, SPAN)


@computation("Reordering dense attention")
def sorted_map(run, rnd: int, span: tuple, grid: int):
    """Dense attention with queries and keys in LSH round `rnd`'s sorted order (the run is LSH's)."""
    s = compute.result(run).structure
    q, k, _ = compute.qkv(run)
    return lsh.sorted_dense_map(q, k, s.perm[rnd, 0], s.key_perm[rnd, 0], run.doc.causal, span, span, grid)


@computation()
def caught(run, rows: int):
    """For evenly spaced queries, which of dense's top-k keys some round put in the query's window."""
    dense_top = compute.dense(run, maps.grid()).topk_index
    return lsh.topk_caught(compute.result(run), dense_top, sample_rows(run.doc.n, rows))[0]


@computation("Re-hashing, seeds")
def rehash(run, seeds: tuple):
    """Top-k recall and reach with the run's parameters under each seed."""
    return lsh.seed_recall(*compute.qkv(run), run.params, list(seeds), run.doc.causal, max_rows=REHASH_ROWS,
                           progress=report)

run, res = forms.header(MECH)
doc, s = run.doc, res.structure
rounds = s.n_rounds
forms.metrics(res, {"Buckets × rounds": (f"{s.n_buckets} × {rounds}", None),
                    "Chunk length": (s.chunk_length, "clamped to the text length; in separate-QK mode a chunk "
                                     "holds twice this many items, about this many queries and as many keys")})

charts.section("Buckets along the text",
               "Each strip is one hashing round; a colour is a bucket. Tokens whose vectors point the same way share a "
               "colour. Long texts show the bucket of the first token of each stretch.")
charts.show(st, figs.bucket_strips(s.buckets[:, 0], s.key_buckets[:, 0], doc.pieces, s.shared_qk),
                width="stretch", key="lsh_strips")

charts.section("Dense and LSH, with buckets on the map",
               "The same query and key window for dense attention and for LSH, on shared scales. The strips on the "
               "top and left edges show one round's bucket of each key and query: LSH weight can only appear "
               "where the two share a bucket's neighbourhood in the sorted order.")
st.session_state[ROUND.key] = min(int(st.session_state[ROUND.key]), rounds - 1)
rnd = st.selectbox("Round shown on the map edges, the bucket sizes and the sorted matrix", list(range(rounds)),
                   key=ROUND.key)
window = maps.zoom(doc.n)
maps.pair(run, MECH.title, window, build=lambda mat, tokens, rows, cols, **style: figs.map_with_buckets(
    mat, tokens, rows, cols, s.buckets[rnd, 0], s.key_buckets[rnd, 0], **style))

charts.section("Bucket sizes",
               f"Left: tokens per bucket in round {rnd}; right: how many buckets of all rounds hold how many tokens. "
               "Uneven buckets make chunks mix buckets (shared QK) or leave queries without keys of their bucket "
               "nearby (separate QK); the dotted line is an even split.")
separate = not s.shared_qk
left, right = st.columns(2)
charts.show(left, figs.bucket_sizes(s.bucket_sizes[rnd, 0], s.key_bucket_sizes[rnd, 0] if separate else None),
                  width="stretch", key="lsh_sizes")
charts.show(right, figs.size_histogram(s.bucket_sizes[:, 0], s.key_bucket_sizes[:, 0] if separate else None),
                   width="stretch", key="lsh_size_hist")

charts.section("One round, sorted and chunked",
               "Dense attention with queries and keys reordered by this round's buckets. The outlined blocks are what "
               "LSH computes: each chunk of queries against its own and the previous chunk's keys. Dense mass outside "
               "the blocks is what this round misses (outlines appear once few enough chunks are in view).")
n = doc.n
if n > 1:
    a, b = st.session_state[SPAN.key]
    st.session_state[SPAN.key] = (min(a, n - 1), min(b, n))
    span = st.slider("Sorted slots in view", 0, n, key=SPAN.key)
    span = (min(span[0], n - 1), max(span[1], min(span[0], n - 1) + 1))
else:
    span = (0, 1)
pooled = sorted_map(run, rnd, span, maps.grid())
perm, key_perm = s.perm[rnd, 0].tolist(), s.key_perm[rnd, 0].tolist()
boxes = lsh.chunk_windows(s.query_chunk[rnd, 0], s.key_chunk[rnd, 0], s.n_chunks)
charts.show(st, figs.sorted_matrix(pooled, [doc.pieces[i] for i in perm], [doc.pieces[i] for i in key_perm],
                                   boxes, title=f"Round {rnd}: {len(set(s.query_chunk[rnd, 0].tolist()))} chunks"),
                width="stretch", key="lsh_sorted")

charts.section("Dense's strongest pairs: caught or missed")
rows = sample_rows(doc.n, PAIR_ROWS)
dense_top = compute.dense(run, maps.grid()).topk_index
top_index = dense_top[0, rows]
hit = caught(run, PAIR_ROWS)
st.caption(f"For {rows.numel():,} evenly spaced queries, each of dense's top-{top_index.shape[-1]} keys is a blue dot "
           f"when some round put it in the query's window, an orange cross when no round did. "
           f"{float(hit.float().mean()):.1%} are caught.")
left, right = st.columns([2, 1])
charts.show(left, figs.caught_pairs(rows, top_index, hit, doc.labels), key="lsh_pairs")
charts.show(right, figs.caught_by_rank(hit), key="lsh_rank")

charts.section("Re-hash: recall across seeds",
               f"The same parameters with rotations drawn from other seeds, measured on {REHASH_ROWS} evenly spaced "
               "queries: the spread shows how much one hash's luck decides what LSH finds.")
count = int(st.number_input("Seeds", int(SEEDS.lo), int(SEEDS.hi), key=SEEDS.key))
params = run.params
base = {name: value for name, value in params.items() if name != "seed"}
seeds = [int(params["seed"]) + i for i in range(count)]
base_run = run.of(MECH.key, base)
if st.button("Re-hash", key="lsh_rehash") or rehash.made(base_run, tuple(seeds)):
    result = rehash(base_run, tuple(seeds))
    charts.show(st, figs.seed_spread(result), key="lsh_seed_spread")
    st.caption(f"top-k recall {float(result['recall'].mean()):.3f} ± {float(result['recall'].std()):.3f}, reachable "
               f"dense mass {float(result['reach_mass'].mean()):.3f} ± {float(result['reach_mass'].std()):.3f} "
               f"(mean ± standard deviation over {len(seeds)} seeds).")

charts.section("Fidelity against dense")
fidelity.panel(run)
