"""Plotly figures, one module per page (named like the page); no Streamlit here.
"""
