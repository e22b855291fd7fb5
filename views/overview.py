"""Dense attention over the whole text: the pooled map, entropy and peak weight
along the text, and a token inspector."""
import streamlit as st

from explorer.figures import common
from ui import compute, document, downloads, inspector, maps

run = document.require()
doc = run.doc
st.title("Dense attention")
st.caption("Every query token attends to every key token of the text. The map pools query rows and key columns "
           "to the screen's resolution; drag a box on it (or use the zoom sliders) to see any window token by token, "
           "its first row becoming the inspected query. Hover for the text.")

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

st.subheader("Along the text")
st.caption("Entropy (nats) is high where a query spreads its attention thin; the max weight is the single largest "
           "share one key takes. The shaded band spans the min and max of each pooled stretch.")
left, right = st.columns(2)
left.plotly_chart(common.along_text({"entropy": stats.entropy[0]}, doc.tokens, y_title="nats"),
                  width="stretch", key="entropy")
right.plotly_chart(common.along_text({"max weight": stats.max_weight[0]}, doc.tokens, y_title="weight"),
                   width="stretch", key="max_weight")
st.download_button("Per-token statistics (CSV)", downloads.series_csv(
    {"entropy": stats.entropy[0], "max weight": stats.max_weight[0], "log-sum-exp": stats.lse[0]}),
    "dense-per-token.csv", "text/csv")

st.subheader("Token inspector")
st.caption("Pick a query token: the text around it is shaded by the weight it puts on each token, and the table "
           "lists the keys it weighs most anywhere in the text.")
query = inspector.query_picker(doc)
row = compute.query_row(run, query)
inspector.text_view(doc, row, query)
st.dataframe(inspector.topk_table(doc, row), width="stretch", hide_index=True,
             column_config={"weight": st.column_config.NumberColumn(format="%.4f")})
