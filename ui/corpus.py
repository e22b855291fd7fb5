"""The Corpus page's sections: where a sweep comes from (the bundled example, a path on this server,
uploaded files), read once through the cache; its sinks, fidelity and entropy charts; the table,
whose clicked row opens on the Dense attention page the way a link with run=true opens a view
(ui.share.load); the documents that failed."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from explorer.analysis import corpus, needle_corpus
from explorer.analysis.sinks import THRESHOLD
from explorer.core.bundled import short_name
from explorer.figures import corpus as figs
from explorer.sweep.inputs import read_inputs
from ui import charts, compute, document, hosting, inspector, messages, settings, share
from ui.cache import computation
from ui.messages import plain
from ui.settings import Setting
from ui.state import Encoding
from ui.texts import TextStore

SOURCES = {"example": "the bundled example", "path": "a path on this server", "upload": "uploaded files"}
SOURCE = Setting("corpus_source", "example", choices=tuple(SOURCES))
PATH = Setting("corpus_path", "", max_chars=1000)
MODEL = Setting("corpus_model", "", max_chars=200)  # "" for every model of the sweep
MECHANISM = Setting("corpus_mechanism", "", max_chars=200)  # a mechanism as shown, "" for every one
LAYER = Setting("corpus_layer", -1, lo=-1, hi=1023)  # -1 for every layer
SETTINGS = (SOURCE, PATH, MODEL, MECHANISM, LAYER)
EXPLORER = "views/overview.py"  # where a row opens


@dataclass(frozen=True)
class Column:
    """A column of the table as drawn: its header, width in pixels, number format, and what a short
    header stands for (shown on hovering it)."""

    label: str
    width: int
    format: str | None = None
    help: str | None = None


# The table's columns in order: 1,075 px, with the row ticks and the scroll bar within the 1,140 px
# the main area holds at 1,600 px with the sidebar open, so no row needs a sideways scroll. "These rows (CSV)" keeps
# every column, those not drawn (HIDDEN) included.
TABLE = {
    "document": Column("Document", 150),
    "model_shown": Column("Model", 155),
    "layer": Column("Layer", 50, "%d"),
    "head": Column("Head", 50, "%d"),
    "shown": Column("Mechanism", 190),
    "tokens": Column("Tokens", 60, "localized", "tokens measured: the text's first tokens, as many as this"),
    "output_rel_error": Column("Output error", 90, "%.3g", "the output's error relative to dense attention's"),
    "total_variation": Column("Total variation", 100, "%.3f"),
    "topk_recall": Column("Top-k recall", 85, "%.3f"),
    "normalised_entropy": Column("Entropy", 65, "%.3f", "normalised entropy: 0 when a query attends to one key, "
                                 "1 when uniformly"),
    "first_token_mass": Column("First token", 80, "%.3f", f"first-token score (a sink above {THRESHOLD:g})"),
}
HIDDEN = ("sink", "seconds", "model", "source", "text_tokens")  # in the CSV; model, source, length: what a row opens


@dataclass(frozen=True)
class Upload:
    """An uploaded file as a cache key: Streamlit's id for it; its bytes ride along uncompared."""

    file_id: str
    data: bytes = field(compare=False, repr=False)


@computation("Reading the sweep")
def read(where: str | tuple[Upload, ...], stamp: tuple = ()) -> pd.DataFrame:
    """A sweep from a path (stamp: what changes when it is written again) or uploaded part files."""
    if isinstance(where, str):
        return corpus.read(where)
    side = (corpus.IN_MODEL_SCHEMA, needle_corpus.SCHEMA)  # the sweep's other tables, uploaded with it
    return pd.concat([corpus.read(u.data) for u in where if not any(corpus.holds(u.data, s) for s in side)],
                     ignore_index=True)


@computation("Reading the sweep's in-model table")
def read_in_model(where: str | tuple[Upload, ...], stamp: tuple = ()) -> pd.DataFrame | None:
    """The sweep's in-model table (its folder beside a path's head table, or the uploaded files that hold
    one), or None: a sweep run without --in-model."""
    if isinstance(where, str):
        return corpus.read_in_model(where)
    return corpus.read_in_model([u.data for u in where if corpus.holds(u.data, corpus.IN_MODEL_SCHEMA)])


@computation("Reading the sweep's needle table")
def read_needle(where: str | tuple[Upload, ...], stamp: tuple = ()) -> pd.DataFrame | None:
    """The sweep's needle table (its folder beside a path's head table, or the uploaded files that hold
    one), or None: a sweep run without --needle."""
    if isinstance(where, str):
        return needle_corpus.read(where)
    return needle_corpus.read([u.data for u in where if corpus.holds(u.data, needle_corpus.SCHEMA)])


def _stamp(path: Path) -> tuple:
    """Files, bytes and the last change under a path: a sweep written again is read again."""
    files = [f for f in (path.rglob("*") if path.is_dir() else [path]) if f.is_file()]
    stats = [f.stat() for f in files]
    return len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def choose() -> pd.DataFrame | None:
    """The source picker and the sweep it names; None (after saying what to do) until there is one,
    or when what it names is no sweep. A hosted demo reads uploads only, never a path on its server."""
    try:
        return _chosen()
    except ValueError as err:
        messages.error(err, "Choose a sweep written by python -m explorer.sweep.")
        return None


def _chosen() -> pd.DataFrame | None:
    offered = [k for k in SOURCES if not (k == "path" and hosting.hosted())]
    if st.session_state[SOURCE.key] not in offered:  # from a link
        settings.refuse(SOURCE.key, "this demo reads only uploaded sweeps")
        st.session_state[SOURCE.key] = SOURCE.default
    kind = st.radio("Sweep", offered, key=SOURCE.key, format_func=SOURCES.get, horizontal=True)
    if kind == "example":
        return read(*chosen())
    if kind == "path":
        typed = st.text_input("A Parquet file or dataset folder", key=PATH.key, max_chars=PATH.max_chars,
                              placeholder="/data/sweep, as given to python -m explorer.sweep --out").strip()
        if not typed:
            st.info("Type the path of a sweep: the folder `python -m explorer.sweep --out` wrote, or one of its "
                    "Parquet files.")
            return None
        return read(*chosen())
    cap = hosting.sweep_mb()
    uploads = st.file_uploader("A sweep's Parquet files (every part file of its folder)", type=["parquet"],
                               accept_multiple_files=True, max_upload_size=cap, key="corpus_upload")
    if not uploads:
        st.info("Upload the Parquet files of a sweep (select every part file of its folder at once).")
        return None
    if cap is not None and sum(u.size for u in uploads) > cap * 2**20:
        st.error(f"These files hold {sum(u.size for u in uploads) / 2**20:.1f} MB; this demo reads sweeps of up to "
                 f"{cap} MB.")
        return None
    return read(*chosen())


def chosen() -> tuple[str | tuple[Upload, ...], tuple]:
    """What the source picker (drawn by choose) names, as read takes it: a path and its stamp, or the uploads."""
    kind = st.session_state[SOURCE.key]
    if kind == "example":
        return str(corpus.EXAMPLE), _stamp(corpus.EXAMPLE)
    if kind == "path":
        typed = st.session_state[PATH.key].strip()
        return typed, _stamp(Path(typed))
    return tuple(Upload(u.file_id, u.getvalue()) for u in st.session_state.get("corpus_upload") or []), ()


def pick(options: list, setting: Setting, label: str, every: str, where=st, shown=str):
    """A selectbox over `options` and "every" (the setting's default); a value from another sweep
    (or a link) that is not among them falls back to every."""
    if st.session_state[setting.key] not in options:
        st.session_state[setting.key] = setting.default
    return where.selectbox(label, [setting.default, *options], key=setting.key,
                           format_func=lambda v: every if v == setting.default else shown(v))


def summary(fine: pd.DataFrame, failed: pd.DataFrame) -> pd.DataFrame:
    """What the sweep holds in a line, and the model filter; the measured rows of the chosen models."""
    models = sorted(fine.model.unique())
    st.caption(f"{fine.document.nunique():,} documents, {len(models)} model{'s' * (len(models) > 1)}, "
               f"{fine.mechanism.nunique()} mechanisms (dense included), {len(fine):,} rows"
               + (f"; {len(failed):,} failed (listed at the end)" if len(failed) else "") + ".")
    model = pick(models, MODEL, "Model", "every model", where=st.columns(3)[0], shown=short_name)
    return fine if not model else fine[fine.model == model]


def sinks(rows: pd.DataFrame) -> None:
    """A layer x head map of the sink share per model; a sentence for a model with no sink at all."""
    charts.section("Sinks across documents",
                   f"The share of documents in which a head gives the first token more than {THRESHOLD:g} of each "
                   "query's attention (Gu et al.'s first-token score, over the queries the sweep measured), from 0 "
                   "to 100 %, each document at the longest length the sweep measured it. Hover a cell for its counts.")
    models = sorted(rows.model.unique())
    for where, name in zip(st.columns(len(models)), models):
        grid = corpus.sink_grid(rows, name)
        if grid.sinks.any():
            charts.show(where, figs.sink_share_map(grid), key=f"corpus_sinks_{name}")
        else:  # a map of zeros says nothing its title would not
            where.info(f"**{plain(short_name(name))}: no head is a sink in any document.** The first token's "
                       f"score stays at most {grid.top:.2f} in every layer, head and document, under the threshold "
                       f"{THRESHOLD:g}.")


def fidelity(rows: pd.DataFrame, colours: dict) -> None:
    """Each mechanism's fidelity against dense over documents and heads, as boxes per model."""
    charts.section("Fidelity per mechanism",
                   "Each mechanism against dense attention on the same heads: over every document, length and head, "
                   "the box spans the middle half, the line is the median, the whiskers reach the 10th and 90th "
                   "percentiles. Lower errors and higher recall are closer to dense.")
    table = corpus.fidelity_summary(rows)
    if table.empty:
        st.info("This sweep measured dense attention only: no mechanism to compare.")
    else:
        charts.show(st, figs.fidelity_boxes(table, colours), key="corpus_fidelity")


def entropy(rows: pd.DataFrame, colours: dict) -> None:
    """Normalised entropy against the tokens measured, each document's lengths joined; in words when
    every text was measured at one length."""
    lengths = corpus.entropy_by_length(rows)
    if lengths.tokens.nunique() == 1:  # a column of points, no trend to read
        charts.section("Entropy against length")
        means = "; ".join(f"{plain(short_name(m))}: {e:.2f}"
                          for m, e in lengths.groupby("model").entropy.mean().items())
        st.info(f"Every document was measured on {lengths.tokens.iloc[0]:,} tokens, so there is no length to draw "
                "entropy against; sweep with several lengths (`--max-tokens 512 1024 2048`) or texts of different "
                f"lengths to see it. Mean normalised entropy over the documents (1 = uniform): {means}.")
        return
    caption = ("Each point is one document under one model at one length (its first tokens, encoded on their own): "
               "the mean normalised entropy of its heads, 0 when a query attends to one key, 1 when uniformly. A line "
               "joins one document's lengths.")
    if not lengths.duplicated(["model", "source"]).any():
        caption += (" Every document was measured at one length, so the points compare texts, not a text growing; "
                    "sweep with several lengths (`--max-tokens 512 1024 2048`) to follow each one.")
    charts.section("Entropy against length", caption)
    charts.show(st, figs.entropy_against_length(lengths, colours), key="corpus_entropy")


def in_model(models: list[str], colours: dict) -> None:
    """Perplexity with each mechanism inside the model over the model's own, per model, across documents;
    nothing for a sweep run without --in-model."""
    table = read_in_model(*chosen())
    if table is None:
        return
    if models:
        table = table[table.model.isin(models)]
    summary = corpus.in_model_summary(table)
    charts.section("Inside the model",
                   "Each mechanism swapped into every layer of the model (python -m explorer.sweep --in-model): the "
                   "perplexity of each document's next tokens over the model's own, across documents and lengths. "
                   "1 is no loss; the box spans the middle half, the whiskers the 10th to 90th percentiles.")
    if summary.empty:
        st.info("No mechanism ran inside these models (an encoder predicts no next token; see the failures below).")
    else:
        charts.show(st, figs.in_model_boxes(summary, colours), key="corpus_in_model")


def every_row(rows: pd.DataFrame) -> None:
    """The filtered rows, sortable; a click on one opens it on the Dense attention page."""
    charts.section("Every row", "Click a column to sort; click a row to open that document, model, layer and head "
                   "on the Dense attention page.")
    a, b, _ = st.columns(3)
    named = corpus.named(rows)
    mechanism = pick(sorted(named.shown.unique()), MECHANISM, "Mechanism", "every mechanism", where=a)
    layer = pick(sorted(rows.layer.unique().tolist()), LAYER, "Layer", "every layer", where=b)
    shown = table(named, mechanism, layer)
    # keyed by the filters: other rows start with no row clicked (a click kept would open another row)
    event = st.dataframe(shown, key=f"corpus_rows_{settings.value(MODEL)}_{mechanism}_{layer}", on_select="rerun",
                         selection_mode="single-row", hide_index=True, column_order=tuple(TABLE),
                         column_config=column_config())
    st.download_button("These rows (CSV)", lambda: shown.to_csv(index=False), "corpus-rows.csv", "text/csv",
                       on_click="ignore")
    if event.selection.rows:
        open_row(shown.iloc[event.selection.rows[0]])


def failures(failed: pd.DataFrame) -> None:
    """The documents the sweep could not measure, each with its error (escaped: it may quote the text)."""
    if len(failed):
        charts.section("Documents that failed", "Each was skipped by the sweep with this error; the others went on.")
        for row in failed.itertuples():
            st.markdown(f"- **{plain(row.document)}** ({plain(short_name(row.model))}): {plain(row.error)}")


def table(rows: pd.DataFrame, mechanism: str, layer: int) -> pd.DataFrame:
    """The rows (corpus.named, of the chosen models) of the filters, in TABLE's columns and HIDDEN's."""
    if mechanism:
        rows = rows[rows.shown == mechanism]
    if layer >= 0:
        rows = rows[rows.layer == layer]
    rows = rows.assign(model_shown=rows.model.map(short_name))  # "MiniLM 22M, 512 tokens", not its key
    return rows[[*TABLE, *HIDDEN]].reset_index(drop=True)


def column_config() -> dict:
    """Each drawn column under its header and width, numbers to a readable precision."""
    return {col: st.column_config.NumberColumn(c.label, width=c.width, format=c.format, help=c.help) if c.format
            else st.column_config.Column(c.label, width=c.width, help=c.help) for col, c in TABLE.items()}


def file_text(source: str) -> str | None:
    """A file's text as the sweep read it (a JSONL source "/x/c.jsonl#12" names its line), when this
    server may read files (never in a hosted demo) and can; else None."""
    if hosting.hosted():
        return None
    line = re.fullmatch(r"(.+\.jsonl)#\d+", source)
    try:
        docs = read_inputs([line.group(1) if line else source])
    except ValueError:
        return None
    return next((d.text for d in docs if d.source == source and not d.error), None)


def open_row(row: pd.Series) -> None:
    """Open a row's document, model, layer and head on the Dense attention page, encoded as a link
    with run=true opens a view: the text as the row measured it (its first tokens when the sweep cut
    it), whole (no zoom or query carried over from the previous text), with a note above the page
    saying which length is shown; say so plainly when its text cannot be had here."""
    title = corpus.sample_title(row.source)
    text = compute.sample(title) if title is not None else file_text(row.source)
    if text is None:
        st.warning(f"The text of “{plain(row.document)}” is not available here: "
                   + ("a hosted demo opens only the bundled samples." if hosting.hosted()
                      else f"this server cannot read {plain(row.source)}."))
        return
    try:
        hosting.check_model(row.model)  # before its tokenizer is loaded to count and cut the text
        enc = Encoding.of_text(text, row.model, int(row.layer), 0)
        count = compute.token_count(enc)
        cut = int(row.tokens) < count
        if cut:
            enc = compute.first_tokens(enc, int(row.tokens))
    except ValueError as err:
        messages.error(err)
        return
    values = {"model": row.model, "layer": int(row.layer), "head": int(row["head"]), "auto_head": False, "run": True,
              **{s.key: s.default for s in inspector.ON_TEXT}}  # whole, at the text's own query
    if title is not None and not cut:
        values.update(source="Sample", sample=title)
    else:
        values["text"] = TextStore.from_env().put(enc.text, enc.text_key)
    document.note_origin(enc, measured_note(row, count))
    share.load(values)
    st.switch_page(EXPLORER)


def measured_note(row: pd.Series, count: int) -> str:
    """Which part of a row's document is shown (count: the tokens it holds), in a sentence."""
    name, tokens = f"“{plain(row.document)}”", int(row.tokens)
    if tokens >= count:
        said = f"Opened from the Corpus table: {name}, all {count:,} of its tokens, as the sweep measured it."
    else:
        said = (f"Opened from the Corpus table: {name}, its first {tokens:,} of {count:,} tokens, as the sweep "
                "measured it (the sidebar holds that part as a pasted text).")
    if count != int(row.text_tokens):  # a file written again since the sweep read it
        said += f" The sweep counted {int(row.text_tokens):,} tokens in this document; it holds {count:,} now."
    return said
