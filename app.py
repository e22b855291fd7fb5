"""Long-sequence attention explorer: `streamlit run app.py`.

The entry point holds the navigation and the shared sidebar (text, model, layer, head);
every page reads the encoded document through ui.document. A ValueError anywhere becomes its
message; any other error a short message and a log line, never a traceback (ui.messages).
"""
from pathlib import Path

import streamlit as st

from ui import charts, messages, opening, settings, share, sidebar

st.set_page_config(page_title="Attention explorer", page_icon="🔭", layout="wide")
sidebar.warm_first_visit()  # once per process: the default page every first visit shows, made for all

SECTIONS = {
    "Explore": [("views/overview.py", "Dense attention", "🔭"),
                ("views/model.py", "Model view", "🗺️"),
                ("views/compare.py", "Compare", "⚖️"),
                ("views/dilution.py", "Score dilution", "💧"),
                ("views/inside.py", "Inside the model", "🧩"),
                ("views/needle.py", "Needle", "🪡"),
                ("views/corpus.py", "Corpus", "📚")],
    "Mechanisms": [("views/lsh.py", "LSH buckets", "🪣"),
                   ("views/lowrank.py", "Low rank", "📉"),
                   ("views/segmented.py", "Segmented", "🧱"),
                   ("views/hierarchical.py", "Hierarchical", "🌲"),
                   ("views/memory.py", "Recurrent memory", "🧠"),
                   ("views/routing.py", "Routing", "🔀"),
                   ("views/relpos.py", "Relative position", "📏")],
}
PAGES = {section: [st.Page(path, title=title, icon=icon, default=path == "views/overview.py")
                   for path, title, icon in pages]
         for section, pages in SECTIONS.items()}
STEMS = {title: Path(path).stem for pages in SECTIONS.values() for path, title, _ in pages}
OWNERS = set(STEMS.values())  # each page owns the settings "<stem>_..." it declares

navigation = st.navigation(PAGES)
charts.start_report(navigation.title)
early = opening.show(navigation.title)  # a fresh server's first visitor: the saved map while the model loads
with messages.guarded("drawing the sidebar"):
    sidebar.render(OWNERS)
if early is not None:
    early.empty()
notices = st.container()  # above the page: what of a link or a settings file was not applied
with notices:
    share.notices()  # before the page, which may stop early (no text encoded yet)
with messages.guarded(f"drawing the page {navigation.title}"):
    navigation.run()
    settings.settle(STEMS[navigation.title])  # the page ran to its end: what it did not declare is not its setting
with notices:
    share.notices()  # and what the page itself refused as it declared its settings
with st.sidebar:
    charts.report_button(f"{navigation.title} · attention explorer")
share.publish_to_url()  # again: the page may have moved the zoom or the query
