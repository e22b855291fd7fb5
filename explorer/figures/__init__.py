"""Figure builders: data in, plotly/altair figure (or escaped HTML) out. No streamlit."""
