"""Streamlit glue shared by app.py and the pages, in three layers (tests/test_layers.py keeps them):

- infrastructure: hosting, messages, settings, texts (the text store), downloads, cache (the one
  cache and its `computation` decorator), state (Encoding and Run, the values caches key on);
- computations: compute (what every page shares), refine (the dense pass in the background),
  document (the session's current document and head, resolved once);
- panels: charts, maps, inspector, fidelity, forms, remedies, share, sidebar.

Pages stay thin: they get the current Run from `ui.document`, results from named computations,
and place panels. Nothing here computes attention; explorer/ does.
"""
