"""Long-sequence attention explorer: `streamlit run app.py`.

The entry point holds the navigation and the shared sidebar (text, model, layer, head);
every page reads the encoded document through ui.document.
"""
from pathlib import Path

import streamlit as st

from ui import settings, share, sidebar

st.set_page_config(page_title="Attention explorer", page_icon="🔭", layout="wide")

SECTIONS = {
    "Explore": [("views/overview.py", "Dense attention", "🔭"),
                ("views/compare.py", "Compare", "⚖️"),
                ("views/dilution.py", "Score dilution", "💧")],
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
sidebar.render(OWNERS)
try:
    navigation.run()
    settings.settle(STEMS[navigation.title])  # the page ran to its end: what it did not declare is not its setting
except ValueError as err:  # a library check refused an input: say why, in its words
    st.error(str(err))
share.publish_to_url()  # again: the page may have moved the zoom or the query
