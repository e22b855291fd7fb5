"""Streamlit glue shared by app.py and the pages: state, cached compute, panels.

Pages stay thin: they read the encoded document through `ui.state`, get
results through the cached functions in `ui.compute`, and place the panels
of `ui.panels`. Nothing here computes attention; explorer/ does.
"""
