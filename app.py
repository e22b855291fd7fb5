"""Long-sequence attention explorer: `streamlit run app.py`.

The entry point holds the navigation and the shared sidebar (text, model,
layer, head); every page reads the encoded document from session state.
"""
import streamlit as st

from ui import share, sidebar

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

navigation = st.navigation(PAGES)
sidebar.render()
navigation.run()
share.publish_to_url()  # again: the page may have moved the zoom or the query
