"""Long-sequence attention explorer: `streamlit run app.py`.

The entry point holds the navigation and the shared sidebar (text, model,
layer, head); every page reads the encoded document from session state.
"""
import streamlit as st

from ui import sidebar

st.set_page_config(page_title="Attention explorer", page_icon="🔭", layout="wide")

PAGES = {
    "Explore": [st.Page("views/overview.py", title="Dense attention", icon="🔭", default=True)],
}

navigation = st.navigation(PAGES)
sidebar.render()
navigation.run()
