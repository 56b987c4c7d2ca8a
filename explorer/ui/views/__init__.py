"""Streamlit sections that more than one page draws (metric cards, drill-down, suggestions).
"""
