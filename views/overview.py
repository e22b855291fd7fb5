"""Dense attention over the whole text: the pooled map, entropy and peak weight
along the text, and a token inspector."""
import streamlit as st

from explorer.figures import common
from ui import charts, compute, document, downloads, inspector, maps

run = document.require()
doc = run.doc
st.title("Dense attention")
st.markdown("This app shows how attention behaves on long text: the queries, keys and values come from a real "
            "model layer over the whole document, and every long-sequence mechanism runs on them beside exact "
            "dense attention. Below is dense attention over the text in the sidebar; drag a box on the map to "
            "zoom in, and click a point of a curve or a row of the table to follow that token. Paste your own "
            "text in the sidebar, or open a mechanism page to see what it keeps and what it misses.")

stats = compute.dense(run, maps.grid())

a, b, c, d = st.columns(4)
a.metric("Tokens", f"{doc.n:,}")
b.metric("Model windows", len(doc.windows) or "—")
c.metric("Encoding", f"{sum(doc.timings.values()):.2f} s" if doc.timings else "—")
d.metric("Dense pass (this head)", f"{stats.seconds:.2f} s")
steps = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in doc.timings.items())
st.caption(doc.note + (f" Encoding steps: {steps}." if steps else ""))

window = maps.zoom(doc.n)
maps.draw(doc, {f"Layer {doc.layer}, head {run.head}": compute.window_map(run, window, maps.grid())})

charts.section("Along the text",
               "Entropy (nats) is high where a query spreads its attention thin; the max weight is the single largest "
               "share one key takes. The shaded band spans the min and max of each pooled stretch; click a point to "
               "inspect that token.")
left, right = st.columns(2)
for col, name, values, unit in ((left, "entropy", stats.entropy[0], "nats"),
                                (right, "max weight", stats.max_weight[0], "weight")):
    event = charts.show(col, common.along_text({name: values}, doc.tokens, y_title=unit),
                             key=name.replace(" ", "_"), on_select="rerun", selection_mode="points")
    inspector.pick_from(event)
st.download_button("Per-token statistics (CSV)", downloads.series_csv(
    {"entropy": stats.entropy[0], "max weight": stats.max_weight[0], "log-sum-exp": stats.lse[0]}),
    "dense-per-token.csv", "text/csv")

charts.section("Token inspector",
               "Pick a query token: the text around it is shaded by the weight it puts on each token, and the table "
               "lists the keys it weighs most anywhere in the text.")
query = inspector.query_picker(doc)
row = compute.query_row(run, query)
inspector.text_view(doc, row, query)
inspector.topk_picker(doc, row)
