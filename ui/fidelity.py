"""How close a mechanism comes to dense attention: the summary table and the measures along the text."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.figures import fidelity as figs
from ui import charts, compute, downloads
from ui.state import Run

ROWS = ["output relative error", "total variation", "top-8 recall", "reachable dense mass", "entropy change (nats)"]
STATISTICS = {"mean": "mean", "median": "median", "worst_decile": "worst tenth"}


def summary_table(fid) -> pd.DataFrame:
    """Mean, median and worst tenth of each fidelity metric, in words."""
    table = pd.DataFrame(fid.summary()).T.rename(columns=STATISTICS)
    table.index = ROWS
    return table


def panel(run: Run) -> None:
    fid = compute.fidelity_of(run)
    st.dataframe(summary_table(fid).style.format("{:.4f}"), width="stretch")
    sampled = "" if fid.rows.numel() == run.doc.n else f" (measured on {fid.rows.numel():,} evenly spaced queries)"
    st.caption("Per query: relative error of the output, total-variation distance between the two attention rows, "
               "share of dense's top-8 keys the mechanism also ranks top-8, and the share of dense mass on keys the "
               f"mechanism can reach at all{sampled}. Worst tenth: the 90th percentile of errors, the 10th of recalls.")
    along({run.mech: fid}, run.doc, key="fidelity_along")
    series = {"total variation": fid.tv[0], "top-8 recall": fid.recall[0], "reachable mass": fid.reach_mass[0]}
    st.download_button("Fidelity per query (CSV)", downloads.series_csv(series, fid.rows.tolist()),
                       "fidelity-rows.csv", "text/csv", key="fidelity_csv")


def along(fids: dict, doc, key: str) -> None:
    """Fidelity along the text of one mechanism or several (name -> its Fidelity), one panel per measure."""
    charts.show(st, figs.along_text(fids, doc.pieces), key=key)
    st.caption("Each line is the mean over runs of neighbouring measured queries, its faint band their 10th to 90th "
               "percentile (hover a line for its tokens); the CSV holds every query's own values.")
