"""Hierarchical attention: the level tree over the text, attention at each level, what one
token receives from each level, and the combined weights beside dense."""
import streamlit as st

from explorer.analysis.hierarchical import by_level, level_maps
from explorer.figures import common
from explorer.figures import segments as figures
from explorer.mechanisms import REGISTRY
from ui import charts, compute, fidelity, forms, inspector, maps
from ui.cache import computation, report

MECH = REGISTRY["hierarchical"]


@computation("Pooling each level's map, queries")
def level_pooled(run, levels: int, window: tuple, grid: int):
    """What each level alone puts on the keys of the window, pooled like the other maps."""
    q, k, v = compute.qkv(run)
    return level_maps(by_level(q, k, v, **run.params), levels, 1, run.doc.n, rows=window[:2], cols=window[2:],
                      grid=grid, per_bin=compute.MAP_ROWS_PER_BIN, device=q.device, progress=report)


@computation()
def row_by_level(run, query: int):
    """One query's weights from each level, [levels, n]."""
    return by_level(*compute.qkv(run), **run.params)([query])[0, :, 0].cpu()

run, res = forms.header(MECH, structure=("Chunks from", "chunks", "chunk_length"))
doc = run.doc
levels = res.structure.levels
mass = res.structure.level_mass[0]  # [parts, n]
names = ["own chunk (tokens)"] + [f"level {level} nodes" for level in range(1, mass.shape[0])]
forms.metrics(res, {"Tokens": (f"{doc.n:,}", None), "Chunks": (f"{levels[0].starts.numel():,}", None),
                    "Levels above the tokens": (len(levels), None)})

# ---------------------------------------------------------------- the tree
charts.section("The hierarchy over the text",
               "One strip per level, from the chunks down to the whole document; shades alternate from node to node "
               "(grey: a pooled stretch of the strip holding several nodes). Hover for a node's tokens and text.")
strips = {("document" if i == len(levels) - 1 else f"level {i + 1}"): lv.starts for i, lv in enumerate(levels)}
charts.show(st, figures.span_strips(strips, doc.n, doc.pieces), key="hier_tree")

charts.section("Where each query's attention comes from",
               "For every query, the share of its attention that comes from its own chunk's tokens and from the nodes "
               "of each level. The shares add up to one.")
charts.show(st, common.along_text(dict(zip(names, mass)), doc.pieces, y_title="share"),
                key="hier_mass_along")

# ---------------------------------------------------------------- maps
charts.section("Combined weights beside dense, and attention at each level",
               "Top: dense attention and the combined effective weights of hierarchical attention over the zoomed "
               "window. Below: what each level alone puts on the original keys (a node's weight is spread over its "
               "tokens, so coarse levels show as flat blocks); they add up to the combined map. White lines are the "
               "chunk boundaries (on level maps, that level's nodes) when few enough fall in view. One colour scale, "
               "unless a map would look flat on it (the caption says).")
window = maps.zoom(doc.n)
grid = maps.grid()
q, k, v = compute.qkv(run)
pair = {"Dense": compute.window_map(run.reference(), window, grid),
        "Hierarchical (combined)": compute.window_map(run, window, grid)}
per_level = dict(zip(names, level_pooled(run, len(names), window, grid)))
groups = maps.scales({**pair, **per_level})
spans = {name: levels[max(0, i - 1)].starts for i, name in enumerate(per_level)}
maps.draw(doc, pair, groups=groups,
          decorate=lambda fig, name, m: figures.add_boundaries(fig, levels[0].starts, m.row_edges, m.col_edges))
maps.draw(doc, per_level, groups=groups,
          decorate=lambda fig, name, m: (fig.update_layout(height=380),
                                         figures.add_boundaries(fig, spans[name], m.row_edges, m.col_edges)))

# ---------------------------------------------------------------- one token
charts.section("What one token receives from each level",
               "Pick a query token: the bars split its attention by level; the chart shows what each level puts on "
               "every token of the text beside dense attention's row; the text is shaded by the combined weight.")
query = inspector.query_picker(doc)
levels_row = row_by_level(run, query)
left, right = st.columns([1, 2])
charts.show(left, figures.level_bars(mass[:, query], names, title=f"Token {query}: {doc.labels[query]}"),
                  width="stretch", key="hier_query_bars")
charts.show(right, common.along_text({"dense": compute.query_row(run.reference(), query),
                                      **dict(zip(names, levels_row))}, doc.pieces,
                                     y_title="weight", title=f"Attention of token {query} by level"),
                   width="stretch", key="hier_query_row")
inspector.text_view(doc, levels_row.sum(0), query, who=MECH.title)

charts.section("How far from dense")
fidelity.panel(run)
