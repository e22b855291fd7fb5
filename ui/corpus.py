"""The Corpus page's parts: where a sweep comes from (the bundled example, a path on this server,
uploaded files), read once through the cache, filtered into the table, and a row of it opened on
the Dense attention page the way a link with run=true opens a view (ui.share.load)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from explorer.analysis import corpus
from explorer.analysis.corpus import LABELS
from explorer.sweep.inputs import read_inputs
from ui import hosting, settings, share
from ui.cache import computation
from ui.messages import plain
from ui.settings import Setting
from ui.texts import TextStore

SOURCES = {"example": "the bundled example", "path": "a path on this server", "upload": "uploaded files"}
SOURCE = Setting("corpus_source", "example", choices=tuple(SOURCES))
PATH = Setting("corpus_path", "", max_chars=1000)
MODEL = Setting("corpus_model", "", max_chars=200)  # "" for every model of the sweep
MECHANISM = Setting("corpus_mechanism", "", max_chars=200)  # a mechanism as shown, "" for every one
LAYER = Setting("corpus_layer", -1, lo=-1, hi=1023)  # -1 for every layer
SETTINGS = (SOURCE, PATH, MODEL, MECHANISM, LAYER)
EXPLORER = "views/overview.py"  # where a row opens
TABLE = ("document", "model", "layer", "head", "shown", "tokens", "output_rel_error", "total_variation",
         "topk_recall", "normalised_entropy", "first_token_mass", "sink", "seconds")


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
    return pd.concat([corpus.read(u.data) for u in where], ignore_index=True)


def _stamp(path: Path) -> tuple:
    """Files, bytes and the last change under a path: a sweep written again is read again."""
    files = [f for f in (path.rglob("*") if path.is_dir() else [path]) if f.is_file()]
    stats = [f.stat() for f in files]
    return len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def choose() -> pd.DataFrame | None:
    """The source picker and the sweep it names; None (after saying what to do) until there is one.
    A hosted demo reads uploads only, never a path on its server. ValueError for what is no sweep."""
    offered = [k for k in SOURCES if not (k == "path" and hosting.hosted())]
    if st.session_state[SOURCE.key] not in offered:  # from a link
        settings.refuse(SOURCE.key, "this demo reads only uploaded sweeps")
        st.session_state[SOURCE.key] = SOURCE.default
    kind = st.radio("Sweep", offered, key=SOURCE.key, format_func=SOURCES.get, horizontal=True)
    if kind == "example":
        return read(str(corpus.EXAMPLE), _stamp(corpus.EXAMPLE))
    if kind == "path":
        typed = st.text_input("A Parquet file or dataset folder", key=PATH.key, max_chars=PATH.max_chars,
                              placeholder="/data/sweep, as given to python -m explorer.sweep --out").strip()
        if not typed:
            st.info("Type the path of a sweep: the folder `python -m explorer.sweep --out` wrote, or one of its "
                    "Parquet files.")
            return None
        return read(typed, _stamp(Path(typed)))
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
    return read(tuple(Upload(u.file_id, u.getvalue()) for u in uploads))


def pick(options: list, setting: Setting, label: str, every: str, where=st, shown=str):
    """A selectbox over `options` and "every" (the setting's default); a value from another sweep
    (or a link) that is not among them falls back to every."""
    if st.session_state[setting.key] not in options:
        st.session_state[setting.key] = setting.default
    return where.selectbox(label, [setting.default, *options], key=setting.key,
                           format_func=lambda v: every if v == setting.default else shown(v))


def table(rows: pd.DataFrame, mechanism: str, layer: int) -> pd.DataFrame:
    """The rows (corpus.named, of the chosen models) of the filters, in TABLE's columns plus the
    source a row opens."""
    if mechanism:
        rows = rows[rows.shown == mechanism]
    if layer >= 0:
        rows = rows[rows.layer == layer]
    return rows[[*TABLE, "source"]].reset_index(drop=True)


FORMATS = {"output_rel_error": "%.3g", "total_variation": "%.3f", "topk_recall": "%.3f", "normalised_entropy": "%.3f",
           "first_token_mass": "%.3f", "seconds": "%.3f", "tokens": "%d"}


def column_config() -> dict:
    """Each TABLE column under the label a reader sees, numbers to a readable precision."""
    labels = {**LABELS, "shown": LABELS["mechanism"]}
    return {col: st.column_config.NumberColumn(labels[col], format=FORMATS[col]) if col in FORMATS
            else st.column_config.Column(labels[col]) for col in TABLE}


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
    with run=true opens a view; say so plainly when its text cannot be had here."""
    values = {"model": row.model, "layer": int(row.layer), "head": int(row["head"]), "auto_head": False, "run": True}
    title = corpus.sample_title(row.source)
    if title is not None:
        values.update(source="Sample", sample=title)
    else:
        text = file_text(row.source)
        if text is None:
            st.warning(f"The text of “{plain(row.document)}” is not available here: "
                       + ("a hosted demo opens only the bundled samples." if hosting.hosted()
                          else f"this server cannot read {plain(row.source)}."))
            return
        values["text"] = TextStore.from_env().put(text)
    share.load(values)
    st.switch_page(EXPLORER)
