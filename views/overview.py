"""Dense attention over the whole text: the pooled map, entropy and peak weight
along the text, and a token inspector."""
import streamlit as st

from explorer.analysis import windows
from explorer.analysis.model_view import LOCAL
from explorer.analysis.summary import describe, layer_sinks
from explorer.figures import common
from explorer.figures.segments import add_boundaries
from ui import charts, compute, document, downloads, inspector, maps, opening, refine, settings
from ui.messages import plain

WINDOW_LINE = "rgba(214,39,40,0.75)"  # the model's window boundaries on every map and curve
SCOPE = settings.Setting("overview_scope", "text", choices=("text", "windows"))
settings.declare(SCOPE)

run = document.require()
doc = run.doc
st.title("Dense attention")
st.markdown("This app shows how attention behaves on long text: the queries, keys and values come from a real "
            "model layer over the whole document, and every long-sequence mechanism runs on them beside exact "
            "dense attention. Below is dense attention over the text in the sidebar; drag a box on the map to "
            "zoom in, and click a point of a curve or a row of the table to follow that token. Paste your own "
            "text in the sidebar, or open a mechanism page to see what it keeps and what it misses.")

grid = maps.grid()
stats, progress = refine.now(run, grid)

a, b, c, d = st.columns(4)
a.metric("Tokens", f"{doc.n:,}")
b.metric("Model windows", len(doc.windows) or "—")
c.metric("Encoding", f"{sum(doc.timings.values()):.2f} s" if doc.timings else "—")
d.metric("Dense pass (this head)", f"{stats.seconds:.2f} s" if progress is None else
         "stopped" if progress.stopped else "refining…")
steps = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in doc.timings.items())
st.caption(doc.note + (f" Encoding steps: {steps}." if steps else ""))
st.caption(document.shown_as(doc))
if doc.unknown_note():
    st.warning(doc.unknown_note())
summary = st.empty()  # the head in words, filled once the map is drawn (it takes a moment on long texts)
restart = windows.restarts(doc)
cuts = windows.boundaries(doc)
why = compute.opened_because(run)
if why:
    st.caption(why)

window = maps.zoom(doc.n)
if len(doc.windows) > 1:
    scope = st.radio("Scope", SCOPE.choices, key=SCOPE.key, horizontal=True,
                     format_func={"text": "the whole text as one sequence (what the mechanisms run on)",
                                  "windows": "the model's own windows (what each forward pass computed)"}.get)
else:
    scope = "text"
shown = run if scope == "text" else run.of(compute.WINDOWS)
title = f"Layer {doc.layer}, head {run.head}" + ("" if scope == "text" else ": the model's own windows")


def refining_controls(progress: refine.Progress) -> None:
    """The pass's progress in counts, and Stop (or, once stopped, the rest of the pass)."""
    bar, button = st.columns([5, 1], vertical_alignment="center")
    bar.progress(progress.done / max(1, progress.total), text=progress.label())
    if progress.stopped:
        if button.button("Finish the pass", help="Compute every query row (starts the pass again)"):
            refine.resume(run, grid)
            st.rerun()
    elif button.button("Stop", help="End the dense pass here and keep the rows it has"):
        refine.stop(run, grid)
        st.rerun()


def dense_view(refining: bool, colouring: maps.Colouring, drawn: list) -> None:
    """The map and the curves from what the dense pass has; a refining pass redraws them every second.
    drawn: this page run's own (stats, progress), used once; the fragment's own reruns ask the pass anew."""
    stats, progress = drawn.pop() if drawn else refine.now(run, grid)
    if refining and progress is None:
        st.rerun()  # the pass has finished: the whole page draws the exact statistics
    if progress is not None and stats is None:
        refining_controls(progress)
        return
    if progress is not None:
        refining_controls(progress)
    whole = scope == "text" and window == (0, doc.n, 0, doc.n)
    marked = []
    saving = whole and progress is None and scope == "text" and opening.is_opening()

    def decorate(fig, name, m):
        marked.append(add_boundaries(fig, [0, *cuts], m.row_edges, m.col_edges, colour=WINDOW_LINE, dash="dash"))
        if saving:  # what a later start's first visitor is shown while the model loads
            opening.keep(fig, name)

    maps.draw(doc, {title: stats.map if whole else compute.window_map(shown, window, grid)}, colouring=colouring,
              decorate=decorate)
    if cuts:
        where = (f"Red dashed lines: where the model's {len(doc.windows)} windows meet" if None not in marked else
                 f"The model's {len(doc.windows)} windows are too many to mark at this size (zoom in to see where "
                 "they meet)")
        st.caption(where + " (each token's queries and keys come from one window)."
                   + (" Positions restart in every window, so in some heads tokens at the same window position "
                      "look alike across windows: stripes that are positions, not content." if restart else ""))
    charts.section("Along the text", "Entropy (nats) is high where a query spreads its attention thin; the max "
                   "weight is the single largest share one key takes. The shaded band spans the min and max of "
                   "each pooled stretch; click a point to inspect that token.")
    positions = None if stats.rows is None else stats.rows.tolist()
    left, right = st.columns(2)
    for col, name, values, unit in ((left, "entropy", stats.entropy[0], "nats"),
                                    (right, "max weight", stats.max_weight[0], "weight")):
        key = name.replace(" ", "_")
        event = charts.show(col, common.along_text({name: values}, doc.pieces, y_title=unit, clickable=True,
                                                   marks=cuts if len(cuts) <= common.MAX_MARKS else None,
                                                   positions=positions),
                            key=key, on_select="rerun", selection_mode="points")
        inspector.follow_point(event, key, positions)
    if progress is None:
        st.download_button("Per-token statistics (CSV)", lambda: downloads.series_csv(
            {"entropy": stats.entropy[0], "max weight": stats.max_weight[0], "log-sum-exp": stats.lse[0]}),
            "dense-per-token.csv", "text/csv", on_click="ignore")


refining = progress is not None and not progress.stopped
colouring = maps.controls()  # outside the refreshing fragment: drawn once, never left behind as a stale copy
st.fragment(dense_view, run_every=refine.REFRESH_S if refining else None)(refining, colouring, [(stats, progress)])
charts.section("Token inspector", "Follow a token: the text around it is shaded by the weight it puts on each "
               "token (or, for who attends to it, by each query's weight on it), and the table lists the tokens with "
               "the most weight anywhere in the text.")
inspector.panel(run, shown, grid)
if doc.model != "synthetic" and refining:  # measured after the pass, not beside it on the same cores
    summary.caption("The head in words follows once the dense pass has every row.")
elif doc.model != "synthetic":  # last: the map and the inspector are drawn before it is measured
    heads = compute.head_stats(run)
    summary.info(f"**Head {run.head} of layer {doc.layer}.** "
                 + describe({name: value[run.head] for name, value in heads.items()}, doc.n, LOCAL,
                            f"the first token “{plain(doc.labels[0])}”")
                 + (" " + layer_sinks(heads["first_mass"], run.head, doc.n) if doc.causal else "")
                 + f" (On {min(doc.n, 512):,} evenly spaced queries.)")
