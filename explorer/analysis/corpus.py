"""A corpus sweep's table (what `python -m explorer.sweep` writes), read and checked, and the
summaries the Corpus page draws: fidelity per mechanism, the sink share per layer and head,
normalised entropy against length, and the documents that failed.

The table has one row per (document, model, layer, head, mechanism); `mechanism` is "dense" for
the rows about the model's own attention. A document that failed is one row with layer = head
= -1 and its error text; those rows are kept apart from every summary and listed on their own.

A sweep run with --in-model also holds a table of its own (IN_MODEL_SCHEMA, in the folder IN_MODEL
of its directory): one row per (document, model, tokens, mechanism) with the model's perplexity with
that mechanism in its layers (explorer.analysis.in_model) beside its own. Sweeps without it read as
before.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from explorer.analysis import in_model
from explorer.mechanisms import DENSE, REGISTRY

EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "sweeps" / "samples"  # the bundled example sweep
SCHEMA = pa.schema([
    ("document", pa.string()), ("source", pa.string()), ("text_tokens", pa.int64()), ("tokens", pa.int64()),
    ("model", pa.string()), ("layer", pa.int64()), ("head", pa.int64()), ("mechanism", pa.string()),
    ("params", pa.string()), ("rows", pa.int64()), ("output_rel_error", pa.float64()),
    ("total_variation", pa.float64()), ("topk_recall", pa.float64()), ("entropy_mean", pa.float64()),
    ("normalised_entropy", pa.float64()), ("max_weight_mean", pa.float64()), ("first_token_mass", pa.float64()),
    ("sink", pa.bool_()), ("seconds", pa.float64()), ("error", pa.string())])
FIDELITY = ("output_rel_error", "total_variation", "topk_recall")
LABELS = {  # what a reader sees instead of a column name
    "document": "Document", "source": "Source", "text_tokens": "Tokens in the text", "tokens": "Tokens measured",
    "model": "Model", "layer": "Layer", "head": "Head", "mechanism": "Mechanism", "params": "Parameters",
    "rows": "Queries measured", "output_rel_error": "Output error (relative)", "total_variation": "Total variation",
    "topk_recall": "Top-k recall", "entropy_mean": "Entropy (nats)", "normalised_entropy": "Normalised entropy",
    "max_weight_mean": "Largest weight", "first_token_mass": "First-token score", "sink": "Sink",
    "seconds": "Seconds", "error": "Error"}
SAMPLE = "sample:"  # a source naming a bundled sample: "sample:<title>"
IN_MODEL = "_in_model"  # the in-model table's folder in a sweep's directory: Parquet readers skip "_" names,
#                         so the head table's readers (older ones included) never meet its rows
IN_MODEL_SCHEMA = pa.schema([
    ("document", pa.string()), ("source", pa.string()), ("tokens", pa.int64()), ("model", pa.string()),
    ("mechanism", pa.string()), ("params", pa.string()), ("layers", pa.string()), ("perplexity", pa.float64()),
    ("perplexity_dense", pa.float64()), ("agreement", pa.float64()), ("kl_mean", pa.float64()),
    ("seconds", pa.float64()), ("error", pa.string())])


def _kind(t: pa.DataType) -> str:
    """A type's family, what a column is checked by: a sweep written with int32 still reads."""
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "str"
    if pa.types.is_list(t) or pa.types.is_large_list(t):  # whatever Parquet named the item field
        return f"list of {_kind(t.value_type)}"
    return str(t)


def check(table: pa.Table, schema: pa.Schema = SCHEMA) -> pd.DataFrame:
    """The table as a frame with the contract's columns and types (the head table's, or another
    schema's); ValueError naming the columns a sweep must have and this one lacks, or that hold the
    wrong kind of values."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"this Parquet is not a corpus sweep: it lacks the columns {', '.join(missing)} "
                         f"(a sweep has {', '.join(schema.names)})")
    wrong = [f"{f.name} ({table.schema.field(f.name).type}, expected {f.type})" for f in schema
             if _kind(table.schema.field(f.name).type) != _kind(f.type)]
    if wrong:
        raise ValueError(f"this Parquet is not a corpus sweep: wrong types in {', '.join(wrong)}")
    return table.select(schema.names).cast(schema).to_pandas()


def _table(source: str | Path | bytes) -> pa.Table:
    """A Parquet dataset directory, one .parquet file, or an uploaded file's bytes, as one table."""
    try:
        if isinstance(source, bytes):
            table = pq.read_table(pa.BufferReader(source))
        else:
            path = Path(source)
            if not path.exists():
                raise ValueError(f"no file or folder {str(path)!r}")
            table = ds.dataset(path, format="parquet").to_table() if path.is_dir() else pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"this is not a Parquet file or dataset ({err})") from err
    if table.num_rows == 0:
        raise ValueError("this sweep has no rows")
    return table


def read(source: str | Path | bytes) -> pd.DataFrame:
    """A sweep's head table from a Parquet dataset directory, one .parquet file, or an uploaded file's bytes."""
    return check(_table(source))


def holds(data: bytes, schema: pa.Schema) -> bool:
    """Whether an uploaded Parquet file holds rows of a side table of this schema (the in-model or the
    needle table's columns, and no head column): uploads of a whole sweep folder mix them with the head table."""
    try:
        names = pq.read_schema(pa.BufferReader(data)).names
    except (pa.ArrowException, OSError):
        return False
    return set(schema.names) <= set(names) and "head" not in names


def read_side(source: str | Path | list[bytes], folder: str, schema: pa.Schema, task: list[str]) -> pd.DataFrame | None:
    """A sweep's side table (the in-model or the needle table): its folder beside the head table's files,
    or uploaded files' bytes; None for a sweep without one (run without its flag, or older). A task
    (the `task` columns) a stopped sweep ran twice counts once."""
    if isinstance(source, list):
        parts = [check(_table(data), schema) for data in source]
        frame = pd.concat(parts, ignore_index=True) if parts else None
    else:
        where = Path(source) / folder
        frame = check(_table(where), schema) if where.is_dir() and any(where.glob("*.parquet")) else None
    return None if frame is None else frame.drop_duplicates(task, keep="last", ignore_index=True)


def read_in_model(source: str | Path | list[bytes]) -> pd.DataFrame | None:
    """A sweep's in-model table (read_side), one row per (document, model, length, mechanism)."""
    return read_side(source, IN_MODEL, IN_MODEL_SCHEMA, ["source", "model", "tokens", "mechanism", "params"])


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measured rows, error rows): a failed document's row carries no numbers to summarise."""
    failed = frame.error.fillna("") != ""
    return frame[~failed], frame[failed]


def _settings(params: str) -> dict:
    """A row's parameters as a dict (a value that is no JSON object stands as it is)."""
    try:
        parsed = json.loads(params or "{}")
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"params": params}


def _varying(params) -> list[str]:
    """The parameter names whose values differ among these settings of one mechanism."""
    parsed = [_settings(p) for p in set(params)]
    names = sorted(set().union(*parsed))
    return [k for k in names if len({json.dumps(p.get(k), sort_keys=True) for p in parsed}) > 1]


def mechanism_name(key: str, params: str, varying: list[str]) -> str:
    """A mechanism as a chart names it: its registry title, and the values of the parameters that
    set its settings apart when the sweep ran it with several (each is then a mechanism of its own)."""
    title = REGISTRY[key].title if key in REGISTRY else key
    settings = _settings(params)
    shown = ", ".join(f"{k}={json.dumps(settings.get(k))}" for k in varying)
    return f"{title}, {shown}" if shown else title


def named(frame: pd.DataFrame) -> pd.DataFrame:
    """The measured rows with the column `shown`: each mechanism as a chart names it (mechanism_name).
    Parameters that differ only between models (a decoder's causal=true) do not split a mechanism."""
    fine = split(frame)[0].copy()
    fine["shown"] = _names(fine, mechanism_name)
    return fine


def _names(fine: pd.DataFrame, name) -> list[str]:
    """Each row's mechanism as name(key, params, varying) says it, varying: the parameters that set the
    mechanism's settings apart within one model."""
    within = fine.groupby(["mechanism", "model"]).params.agg(_varying)
    varying = {m: sorted(set().union(*lists)) for m, lists in within.groupby(level="mechanism")}
    return [name(m, p, varying[m]) for m, p in zip(fine.mechanism, fine.params)]


def compared(frame: pd.DataFrame) -> pd.DataFrame:
    """named rows of the mechanisms other than dense (dense is the yardstick they are measured by)."""
    fine = named(frame)
    return fine[fine.mechanism != DENSE]


QUANTILES = {"p10": 0.1, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9}  # a box and its whiskers


def fidelity_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per mechanism (as shown) and model: the heads x documents measured ("measured") and each
    fidelity measure's QUANTILES over them (columns "<measure> <quantile>"). Quantiles, not the
    values, so that a box plot of a large sweep sends five numbers per box."""
    groups = compared(frame).groupby(["shown", "model"], sort=True)
    out = groups.size().rename("measured").to_frame()
    for col in FIDELITY:
        for name, q in QUANTILES.items():
            out[f"{col} {name}"] = groups[col].quantile(q)
    return out


def in_model_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per mechanism (as shown) and model: the documents and lengths measured ("measured") and the QUANTILES
    of the perplexity with the mechanism over the model's own ("times_dense <quantile>"); failed rows left out."""
    fine = frame[frame.error.fillna("") == ""].copy()
    fine["times_dense"] = fine.perplexity / fine.perplexity_dense
    fine["shown"] = _names(fine, in_model_name)
    groups = fine.groupby(["shown", "model"], sort=True)
    out = groups.size().rename("measured").to_frame()
    for name, q in QUANTILES.items():
        out[f"times_dense {name}"] = groups.times_dense.quantile(q)
    return out


def in_model_name(key: str, params: str, varying: list[str]) -> str:
    """A mechanism of the in-model table as a chart names it: sink + window as the page's table does
    ('Window only (256)', 'Sinks + window (4 + 252)'), others as mechanism_name says them."""
    if key == "sinks":
        return in_model.label(key, _settings(params))
    return mechanism_name(key, params, varying)


@dataclass(frozen=True)
class SinkGrid:
    """Per layer x head of one model: in how many documents the head is a sink (first-token score
    over explorer.analysis.sinks.THRESHOLD), of how many measured; share = sinks / documents."""

    model: str
    layers: list[int]
    heads: list[int]
    sinks: np.ndarray  # [layers, heads] int
    documents: np.ndarray  # [layers, heads] int
    top: float  # the largest first-token score of any head in any document

    @property
    def share(self) -> np.ndarray:
        """[layers, heads] in 0..1; NaN where no document measured the head."""
        return np.where(self.documents > 0, self.sinks / np.maximum(self.documents, 1), np.nan)


def sink_grid(frame: pd.DataFrame, model: str) -> SinkGrid:
    """The sink share of one model's heads over the documents, from its dense rows (a sink is a
    property of the model's own attention), each document at the longest length the sweep measured."""
    fine, _ = split(frame)
    dense = fine[(fine.mechanism == DENSE) & (fine.model == model)]
    if dense.empty:
        raise ValueError(f"the sweep has no dense rows for the model {model!r}")
    dense = dense[dense.tokens == dense.groupby("source").tokens.transform("max")]
    layers, heads = sorted(dense.layer.unique().tolist()), sorted(dense["head"].unique().tolist())
    counted = dense.groupby(["layer", "head"]).agg(sinks=("sink", "sum"), documents=("sink", "size"))
    full = pd.MultiIndex.from_product([layers, heads], names=["layer", "head"])
    counted = counted.reindex(full, fill_value=0)
    shape = (len(layers), len(heads))
    return SinkGrid(model, layers, heads, counted.sinks.to_numpy(int).reshape(shape),
                    counted.documents.to_numpy(int).reshape(shape), float(dense.first_token_mass.max()))


def entropy_by_length(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per (model, source, tokens) from its dense rows: a document at each length the sweep
    measured it, with its name, the mean normalised entropy over every layer and head, its 10th and
    90th percentiles, and the heads measured. By source: two folders may both hold a "notes.txt"."""
    fine, _ = split(frame)
    dense = fine[fine.mechanism == DENSE]
    groups = dense.groupby(["model", "source", "tokens"], sort=True)
    return pd.DataFrame({
        "document": groups.document.first(), "entropy": groups.normalised_entropy.mean(),
        "p10": groups.normalised_entropy.quantile(0.1), "p90": groups.normalised_entropy.quantile(0.9),
        "heads": groups.size()}).reset_index()


def sample_title(source: str) -> str | None:
    """The bundled sample a source names ("sample:<title>"), else None (a file path)."""
    return source[len(SAMPLE):] if source.startswith(SAMPLE) else None
