"""Routing: the Routing Transformer's k-means clusters over the text and their balance, and
a softmax router over attention paths (probabilities along the text, per token, per path),
with an explicit fit of the router against dense."""
import streamlit as st
import torch

from explorer.analysis.router_fit import fit_router
from explorer.figures import common
from explorer.figures import routing as figs
from explorer.mechanisms import REGISTRY
from ui import charts, compute, fidelity, forms, inspector, maps, settings
from ui.cache import computation, report

MECH = REGISTRY["routing"]
STEPS = settings.Setting("routing_fit_steps", 200, lo=10, hi=2000)
ROWS = settings.Setting("routing_fit_rows", 512, lo=16, hi=8192)
COST = settings.Setting("routing_fit_cost", 0.0, lo=0.0, hi=10.0)
USE_FIT = settings.Setting("routing_use_fit", True)
settings.declare(STEPS, ROWS, COST, USE_FIT)


@computation("Fitting the router, Adam steps")
def fitted(run, steps: int, sample: int, penalty: float):
    """A router W_r fitted on evenly spaced queries to match dense, with a cost penalty (the run is routing's)."""
    settings_ = {name: value for name, value in run.params.items() if name != "mode"}
    return fit_router(*compute.qkv(run), steps=steps, sample=sample, cost_weight=penalty, progress=report, **settings_)

run = forms.opening(MECH)
doc = run.doc
router_mode = run.params["mode"] == "router"

if router_mode:
    charts.section("Fit the router")
    st.caption("A short Adam optimization of W_r on evenly spaced queries that makes the routed output match dense "
               "attention (relative squared error); the cost penalty adds the expected flops of the chosen paths "
               "relative to dense, so the router is pushed towards cheap paths.")
    a, b, c, d = st.columns([1, 1, 1, 2])
    steps = int(a.number_input("Steps", int(STEPS.lo), int(STEPS.hi), step=50, key=STEPS.key))
    sample = int(b.number_input("Sampled queries", int(ROWS.lo), int(ROWS.hi), step=64, key=ROWS.key))
    penalty = float(c.number_input("Cost penalty", COST.lo, COST.hi, step=0.1, key=COST.key))
    pressed = d.button("Fit router", type="primary", key="routing_fit_button")
    if pressed:
        st.session_state[USE_FIT.key] = True
    if pressed or fitted.made(run, steps, min(sample, doc.n), penalty):
        fit = fitted(run, steps, min(sample, doc.n), penalty)
        charts.show(st, figs.loss_curve(fit.losses, fit.seconds), key="routing_loss")
        if st.checkbox("Use the fitted router", key=USE_FIT.key):  # as nested lists: a Run holds hashable values
            run = run.of(MECH.key, {**run.params, "router": fit.router.cpu().tolist()})

res = forms.result(run)
s = res.structure
forms.metrics(res, {"Clusters × w": (f"{s.n_clusters} × {s.cluster_size}", None),
                    "Queries in no cluster": (f"{float((s.query_routes[0] == 0).float().mean()):.1%}",
                                              "they get zero output from the cluster attention"),
                    "Router": (s.router_source if router_mode else "—", None)})

if router_mode:
    charts.section("Routing probabilities along the text")
    st.caption("Each band is one path's routing probability, stacked so they add up to 1 at every token (long "
               "texts show each stretch's mean). Right: the mean probability of every path, labelled with what the "
               "path costs relative to dense. Soft routing runs every path on every token, so the work is their sum.")
    route = s.route[0]
    left, right = st.columns([2, 1])
    charts.show(left, common.along_text({name: route[:, p] for p, name in enumerate(s.paths)}, doc.pieces,
                                        y_title="routing probability", stacked=True),
                      key="routing_area")
    charts.show(right, figs.path_usage(s.usage[0], s.paths, s.path_flops, res.cost["dense_flops"]),
                       width="stretch", key="routing_usage")

charts.section("Clusters over the text",
               "Top strips: the nearest centroid of each query and each key (one colour per cluster). The line counts "
               "how many balanced clusters took each query: 0 means it attends to nothing, 2 or more means its outputs "
               "are averaged.")
charts.show(st, common.strips(torch.stack([s.query_cluster[0], s.key_cluster[0]]), doc.pieces,
                              ["query cluster", "key cluster"]), key="routing_strips")
charts.show(st, common.along_text({"clusters per query": s.query_routes[0]}, doc.pieces, y_title="clusters",
                                  height=240), key="routing_routes_along")

charts.section("Cluster balance",
               "Left: how many queries and keys lie nearest to each centroid, largest first; the dashed line is what a "
               "balanced cluster takes (w queries and w keys), so big clusters drop their farthest tokens and small "
               "ones borrow others'. Middle: tokens by the number of clusters they joined. Right: cosine similarity "
               "between centroids.")
left, mid, right = st.columns(3)
charts.show(left, figs.cluster_balance(s.natural_sizes[0], s.cluster_size),
                  key="routing_balance")
charts.show(mid, figs.routes_histogram(s.query_routes[0], s.key_routes[0]),
                 key="routing_hist")
charts.show(right, figs.centroid_similarity(s.centroid_sim[0]), key="routing_centroids")

maps.pair_section("Dense and routing",
                  "The same window of dense attention and of routing's effective weights, on shared scales. In "
                  "k-means mode weight appears only between tokens sharing a cluster; in router mode it is the "
                  "routed mix of every path's weights (Linformer's may be negative).", run, MECH.title,
                  diverging=router_mode)

charts.section("Token inspector",
               "Pick a query: the text around it is shaded by the weight routing gives each token"
               + (", and the bars show the routing probabilities of the tokens around it." if router_mode else "."))
query = inspector.query_picker(doc)
if router_mode:
    lo = max(0, min(query - 40, doc.n - 80))
    charts.show(st, figs.route_per_token(s.route[0], s.paths, doc.labels, lo, min(doc.n, lo + 80), query),
                    width="stretch", key="routing_per_token")
inspector.text_view(doc, compute.query_row(run, query), query, who=MECH.title)

charts.section("How far from dense")
fidelity.panel(run)
