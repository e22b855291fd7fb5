"""Routing: the Routing Transformer's k-means clusters over the text and their balance, and
a softmax router over attention paths (probabilities along the text, per token, per path),
with an explicit fit of the router against dense."""
import streamlit as st
import torch

from explorer.figures import common, routing as figs
from explorer.mechanisms import REGISTRY
from explorer.analysis.router_fit import fit_router
from ui import compute, panels, state

MECH = REGISTRY["routing"]
FIT = "routing_fit"  # session key: the last fit, with the settings it was made for
USE_FIT = "routing_use_fit"

key, doc, head = state.require_doc()
st.title("Routing")
st.caption("Routing Transformer: queries and keys are unit-normalized and clustered together by spherical k-means; "
           "every cluster takes its w closest queries and keys, and a query attends only to the keys of the "
           "clusters it joined (a query no cluster took gets nothing). In router mode a softmax over the query "
           "vector, r = softmax(x W_r), mixes several attention paths token by token; W_r is random until you "
           "fit it to dense attention on this text.")

params = panels.param_form(MECH, doc=doc)
router_mode = params["mode"] == "router"
fit_for = (key, head, compute.params_json(params))
fit = st.session_state.get(FIT)
fit = fit if fit and fit["for"] == fit_for else None

if router_mode:
    st.subheader("Fit the router")
    st.caption("A short Adam optimization of W_r on evenly spaced queries that makes the routed output match dense "
               "attention (relative squared error); the cost penalty adds the expected flops of the chosen paths "
               "relative to dense, so the router is pushed towards cheap paths.")
    a, b, c, d = st.columns([1, 1, 1, 2])
    steps = int(a.number_input("Steps", 10, 2000, 200, step=50, key="routing_fit_steps"))
    sample = int(b.number_input("Sampled queries", 16, 8192, 512, step=64, key="routing_fit_rows"))
    penalty = float(c.number_input("Cost penalty", 0.0, 10.0, 0.0, step=0.1, key="routing_fit_cost"))
    if d.button("Fit router", type="primary", key="routing_fit_button"):
        q, k, v = doc.head(head)
        settings = {name: value for name, value in params.items() if name != "mode"}
        with st.status("Fitting the router: running every path, then Adam…", expanded=False) as status:
            result = fit_router(q, k, v, steps=steps, sample=min(sample, doc.n), cost_weight=penalty, **settings)
            status.update(label=f"Router fitted in {result.seconds:.1f} s", state="complete")
        fit = {"for": fit_for, "router": result.router.cpu().tolist(), "losses": result.losses,
               "seconds": result.seconds, "paths": result.paths}
        st.session_state[FIT] = fit
        st.session_state[USE_FIT] = True
    if fit:
        st.plotly_chart(figs.loss_curve(fit["losses"], fit["seconds"]), width="stretch", key="routing_loss")
        st.checkbox("Use the fitted router", key=USE_FIT)
        if st.session_state.get(USE_FIT):
            params = {**params, "router": fit["router"]}

res = panels.run_or_stop(key, doc, head, MECH, params)
s = res.structure
unrouted = float((s["query_routes"][0] == 0).float().mean())

a, b, c, d, e = st.columns(5)
a.metric("Clusters × w", f"{s['n_clusters']} × {s['cluster_size']}")
b.metric("Queries in no cluster", f"{unrouted:.1%}", help="they get zero output from the cluster attention")
c.metric("Router", s.get("router_source", "—") if router_mode else "—")
d.metric("Work vs dense", f"{res.cost['flops'] / res.cost['dense_flops']:.3f}×")
e.metric("Run (this head)", f"{res.cost['seconds']:.2f} s")

if router_mode:
    st.subheader("Routing probabilities along the text")
    st.caption("Each band is one path's routing probability, stacked so they add up to 1 at every token (long "
               "texts show each stretch's mean). Right: the mean probability of every path, labelled with what the "
               "path costs relative to dense. Soft routing runs every path on every token, so the work is their sum.")
    route = s["route"][0]
    left, right = st.columns([2, 1])
    left.plotly_chart(common.along_text({name: route[:, p] for p, name in enumerate(s["paths"])}, doc.tokens,
                                              y_title="routing probability", stacked=True), width="stretch", key="routing_area")
    right.plotly_chart(figs.path_usage(s["usage"][0], s["paths"], s["path_flops"], res.cost["dense_flops"]),
                       width="stretch", key="routing_usage")

st.subheader("Clusters over the text")
st.caption("Top strips: the nearest centroid of each query and each key (one colour per cluster). The line counts "
           "how many balanced clusters took each query: 0 means it attends to nothing, 2 or more means its outputs "
           "are averaged.")
st.plotly_chart(common.strips(torch.stack([s["query_cluster"][0], s["key_cluster"][0]]), doc.tokens,
                              ["query cluster", "key cluster"]), width="stretch", key="routing_strips")
st.plotly_chart(common.along_text({"clusters per query": s["query_routes"][0]}, doc.tokens, y_title="clusters",
                                  height=240), width="stretch", key="routing_routes_along")

st.subheader("Cluster balance")
st.caption("Left: how many queries and keys lie nearest to each centroid, largest first; the dashed line is what a "
           "balanced cluster takes (w queries and w keys), so big clusters drop their farthest tokens and small "
           "ones borrow others'. Middle: tokens by the number of clusters they joined. Right: cosine similarity "
           "between centroids.")
left, mid, right = st.columns(3)
left.plotly_chart(figs.cluster_balance(s["natural_sizes"][0], s["cluster_size"]), width="stretch",
                  key="routing_balance")
mid.plotly_chart(figs.routes_histogram(s["query_routes"][0], s["key_routes"][0]), width="stretch",
                 key="routing_hist")
right.plotly_chart(figs.centroid_similarity(s["centroid_sim"][0]), width="stretch", key="routing_centroids")

st.subheader("Dense and routing")
st.caption("The same window of dense attention and of routing's effective weights, on one colour scale. In "
           "k-means mode weight appears only between tokens sharing a cluster; in router mode it is the routed "
           "mix of every path's weights (Linformer's may be negative).")
window = panels.zoom(doc.n)
panels.map_pair(key, doc, head, MECH, params, window, diverging=router_mode)

st.subheader("Token inspector")
st.caption("Pick a query: the text around it is shaded by the weight routing gives each token"
           + (", and the bars show the routing probabilities of the tokens around it." if router_mode else "."))
query = panels.query_picker(doc)
if router_mode:
    lo = max(0, min(query - 40, doc.n - 80))
    st.plotly_chart(figs.route_per_token(s["route"][0], s["paths"], doc.tokens, lo, min(doc.n, lo + 80), query),
                    width="stretch", key="routing_per_token")
row = compute.query_row(key, head, MECH.key, compute.params_json(params), query, doc)
panels.text_view(doc, row, query)

st.subheader("How far from dense")
panels.fidelity_panel(key, doc, head, MECH, params)
