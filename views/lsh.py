"""LSH attention (Reformer): buckets over the text and over the map, bucket sizes,
one round's sorted-and-chunked matrix, which of dense's top-k pairs LSH catches,
and how recall varies when the rotations are drawn again."""
import json

import streamlit as st
import torch

from explorer.figures import lsh as figs
from explorer.mechanisms import REGISTRY
from explorer.analysis import lsh
from explorer.core.rows import sample_rows
from ui import compute, panels, state

MECH = REGISTRY["lsh"]
PAIR_ROWS = 2000  # queries whose dense top-k pairs are checked
REHASH_ROWS = 512  # queries measured per re-hash


@st.cache_resource(show_spinner=False, max_entries=8)
def sorted_map(doc_key: str, head: int, params: str, rnd: int, window: tuple, grid: int, _doc, _res):
    q, k, _ = _doc.head(head)
    s = _res.structure
    return lsh.sorted_dense_map(q, k, s["perm"][rnd, 0], s["key_perm"][rnd, 0], _doc.causal,
                                window[:2], window[2:], grid)


@st.cache_resource(show_spinner=False, max_entries=8)
def caught(doc_key: str, head: int, params: str, grid: int, _doc, _res):
    rows = sample_rows(_doc.n, PAIR_ROWS)
    top = compute.dense(doc_key, head, grid, _doc).topk_index
    return rows, top[0, rows], lsh.topk_caught(_res, top, rows)[0]


@st.cache_data(show_spinner=False, max_entries=256)
def rehash_one(doc_key: str, head: int, params: str, seed: int, _doc) -> dict:
    q, k, v = _doc.head(head)
    return lsh.seed_recall(q, k, v, json.loads(params), [seed], _doc.causal, max_rows=REHASH_ROWS)


key, doc, head = state.require_doc()
st.title("LSH attention (Reformer)")
st.caption("Random rotations hash every query and key into a bucket; each round sorts the tokens by bucket, cuts the "
           "sorted order into chunks, and lets each chunk attend only to itself and the chunk before. Rounds with "
           "fresh rotations are mixed by their log-sum-exp, so a key one hash misses another can catch. Shared-QK is "
           "Reformer's own mode (keys are the normalized queries, so it computes a different function from dense); "
           "with it off, queries and keys are hashed apart and a query attends to keys of its own bucket.")

params = panels.param_form(MECH, doc=doc)
res = panels.run_or_stop(key, doc, head, MECH, params)
s = res.structure
p_json = compute.params_json(params)
grid = int(st.session_state["grid"])
rounds = s["n_rounds"]

a, b, c, d = st.columns(4)
a.metric("Buckets × rounds", f"{s['n_buckets']} × {rounds}")
b.metric("Chunk length", s["chunk_length"], help="clamped to the text length; in separate-QK mode a chunk "
         "holds twice this many items, about this many queries and as many keys")
c.metric("FLOPs vs dense", f"{res.cost['flops'] / res.cost['dense_flops']:.1%}")
d.metric("Run time (this head)", f"{res.cost['seconds']:.2f} s")

st.subheader("Buckets along the text")
st.caption("Each strip is one hashing round; a colour is a bucket. Tokens whose vectors point the same way share a "
           "colour. Long texts show the bucket of the first token of each stretch.")
st.plotly_chart(figs.bucket_strips(s["buckets"][:, 0], s["key_buckets"][:, 0], doc.tokens, s["shared_qk"]),
                width="stretch", key="lsh_strips")

st.subheader("Dense and LSH, with buckets on the map")
st.caption("The same query and key window for dense attention and for LSH, on one colour scale. The strips on the "
           "top and left edges show one round's bucket of each key and query: LSH weight can only appear "
           "where the two share a bucket's neighbourhood in the sorted order.")
if st.session_state.get("lsh_round", 0) >= rounds:
    st.session_state["lsh_round"] = 0
rnd = st.selectbox("Round shown on the map edges, the bucket sizes and the sorted matrix", list(range(rounds)),
                   key="lsh_round")
window = panels.zoom(doc.n)
panels.map_pair(key, doc, head, MECH, params, window, build=lambda mat, tokens, rows, cols, **style: figs.map_with_buckets(
    mat, tokens, rows, cols, s["buckets"][rnd, 0], s["key_buckets"][rnd, 0], **style))

st.subheader("Bucket sizes")
st.caption(f"Left: tokens per bucket in round {rnd}; right: how many buckets of all rounds hold how many tokens. "
           "Uneven buckets make chunks mix buckets (shared QK) or leave queries without keys of their bucket "
           "nearby (separate QK); the dotted line is an even split.")
separate = not s["shared_qk"]
left, right = st.columns(2)
left.plotly_chart(figs.bucket_sizes(s["bucket_sizes"][rnd, 0], s["key_bucket_sizes"][rnd, 0] if separate else None),
                  width="stretch", key="lsh_sizes")
right.plotly_chart(figs.size_histogram(s["bucket_sizes"][:, 0], s["key_bucket_sizes"][:, 0] if separate else None),
                   width="stretch", key="lsh_size_hist")

st.subheader("One round, sorted and chunked")
st.caption("Dense attention with queries and keys reordered by this round's buckets. The outlined blocks are what "
           "LSH computes: each chunk of queries against its own and the previous chunk's keys. Dense mass outside "
           "the blocks is what this round misses (outlines appear once few enough chunks are in view).")
n = doc.n
if n > 1:
    span = st.slider("Sorted slots in view", 0, n, (0, n), key=f"lsh_sorted_span_{n}")
    span = (min(span[0], n - 1), max(span[1], min(span[0], n - 1) + 1))
else:
    span = (0, 1)
with st.spinner("Reordering dense attention…"):
    pooled = sorted_map(key, head, p_json, rnd, span + span, grid, doc, res)
perm, key_perm = s["perm"][rnd, 0].tolist(), s["key_perm"][rnd, 0].tolist()
boxes = lsh.chunk_windows(s["query_chunk"][rnd, 0], s["key_chunk"][rnd, 0], s["n_chunks"])
st.plotly_chart(figs.sorted_matrix(pooled, [doc.tokens[i] for i in perm], [doc.tokens[i] for i in key_perm],
                                   boxes, title=f"Round {rnd}: {len(set(s['query_chunk'][rnd, 0].tolist()))} chunks"),
                width="stretch", key="lsh_sorted")

st.subheader("Dense's strongest pairs: caught or missed")
with st.spinner("Checking which of dense's top keys LSH can reach…"):
    rows, top_index, hit = caught(key, head, p_json, grid, doc, res)
st.caption(f"For {rows.numel():,} evenly spaced queries, each of dense's top-{top_index.shape[-1]} keys is green "
           f"when some round put it in the query's window, red when no round did. "
           f"{float(hit.float().mean()):.1%} are caught.")
left, right = st.columns([2, 1])
left.plotly_chart(figs.caught_pairs(rows, top_index, hit, doc.tokens), width="stretch", key="lsh_pairs")
right.plotly_chart(figs.caught_by_rank(hit), width="stretch", key="lsh_rank")

st.subheader("Re-hash: recall across seeds")
st.caption(f"The same parameters with rotations drawn from other seeds, measured on {REHASH_ROWS} evenly spaced "
           "queries: the spread shows how much one hash's luck decides what LSH finds.")
count = st.number_input("Seeds", 2, 32, 5, key="lsh_seeds")
if st.button("Re-hash", key="lsh_rehash") or st.session_state.get("lsh_rehashed") == (key, head, p_json, count):
    st.session_state["lsh_rehashed"] = (key, head, p_json, count)
    base = {name: value for name, value in params.items() if name != "seed"}
    seeds = [int(params["seed"]) + i for i in range(int(count))]
    bar = st.progress(0.0, text="re-hashing")
    parts = []
    for i, seed in enumerate(seeds):
        parts.append(rehash_one(key, head, compute.params_json(base), seed, doc))
        bar.progress((i + 1) / len(seeds), text=f"seed {seed} ({i + 1} of {len(seeds)})")
    bar.empty()
    result = {"seed": seeds, "recall": torch.cat([p["recall"] for p in parts]),
              "reach_mass": torch.cat([p["reach_mass"] for p in parts])}
    st.plotly_chart(figs.seed_spread(result), width="stretch", key="lsh_seed_spread")
    st.caption(f"top-k recall {float(result['recall'].mean()):.3f} ± {float(result['recall'].std()):.3f}, reachable "
               f"dense mass {float(result['reach_mass'].mean()):.3f} ± {float(result['reach_mass'].std()):.3f} "
               f"(mean ± standard deviation over {len(seeds)} seeds).")

st.subheader("Fidelity against dense")
panels.fidelity_panel(key, doc, head, MECH, params)
