"""Pruning Explorer: the Streamlit entry point. Each page is a file in pages/."""

import streamlit as st

st.set_page_config(page_title="Pruning Explorer", page_icon=":scissors:", layout="wide")
navigation = st.navigation([
    st.Page("pages/model.py", title="Model", icon=":material/memory:", default=True),
    st.Page("pages/weights.py", title="Weights", icon=":material/bar_chart:"),
    st.Page("pages/activations.py", title="Activations", icon=":material/bolt:"),
    st.Page("pages/similarity.py", title="Similarity", icon=":material/grid_on:"),
    st.Page("pages/prune.py", title="Prune", icon=":material/content_cut:"),
])
navigation.run()
