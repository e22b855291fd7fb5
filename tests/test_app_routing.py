"""AppTest of the routing page: k-means on a short sample, router mode with a fit, a tiny text."""
import json

import conftest
import numpy as np
from conftest import KEEPER, assert_escaped, open_page, open_sample

PAGE = "views/routing.py"
PARAGRAPH = (KEEPER + "<b>Bold?</b> ") * 4


def test_kmeans_draws_clusters_and_balance(app):
    at = open_sample(app, PAGE, "Routing")
    # strips, routes along, balance, histogram, centroids, two maps, fidelity along the text
    assert len(at.get("plotly_chart")) >= 8
    assert at.metric[0].value != "—"
    assert not any(b.label == "Fit router" for b in at.button)


def test_router_mode_fit_and_use(app):
    at = open_page(app, PAGE, source="Paste", text=PARAGRAPH)
    at.selectbox(key="p.routing.mode").set_value("router").run()
    assert not at.exception
    assert at.metric[2].value == "seeded"
    charts = len(at.get("plotly_chart"))
    at.number_input(key="routing_fit_steps").set_value(30).run()
    at.button(key="routing_fit_button").click().run()
    assert not at.exception
    assert at.session_state["routing_use_fit"] is True
    assert at.metric[2].value == "given"  # the fitted W_r is what ran
    assert len(at.get("plotly_chart")) == charts + 1  # the loss curve
    loss = json.loads(at.get("plotly_chart")[0].proto.spec)
    losses = loss["data"][0]["y"]
    assert len(losses) == 31 and losses[-1] < losses[0]
    at.checkbox(key="routing_use_fit").uncheck().run()
    assert not at.exception
    assert at.metric[2].value == "seeded"
    assert_escaped(at, "<b>")


def test_tiny_text(app):
    at = open_page(app, PAGE, source="Paste", text="Tiny.")
    assert not at.exception
    at.selectbox(key="p.routing.mode").set_value("router").run()
    assert not at.exception
    conftest.dense_map_is_exact(at)
    route = conftest.figure(next(c for c in at.get("plotly_chart") if c.proto.id.endswith("routing_per_token")
                                 or "routing probability" in c.proto.spec))
    shares = sum(conftest.values(trace["y"]) for trace in route["data"])
    np.testing.assert_allclose(shares, 1.0, rtol=1e-5)  # the paths' probabilities add up to one per token
