"""Pruning Explorer: the Streamlit entry point. Each page is a file in app_pages/.

The folder is deliberately not called ``pages/``: beside an entry script, that name makes
Streamlit 1.67 fall back to its legacy page discovery when a fresh server's first request
is a deep link (``/prune?...``), bypassing this navigation (titles, order, wide layout).
"""

import streamlit as st

from explorer.ui.heap import freeze_imports

st.set_page_config(page_title="Pruning Explorer", page_icon=":scissors:", layout="wide")
freeze_imports()  # once per process: keeps Streamlit's collection after each run cheap
# Sections follow the user's work: load a model, look inside it, decide a plan, then recover
# accuracy and take the plan out (the engine's packages: explorer/load, look, decide, ...).
# Learn comes first after the model: guided lessons that open the other pages.
navigation = st.navigation({
    "": [st.Page("app_pages/model.py", title="Model", icon=":material/memory:", default=True)],
    "Learn": [st.Page("app_pages/learn.py", title="Lessons", icon=":material/school:")],
    "Look inside": [
        st.Page("app_pages/weights.py", title="Weights", icon=":material/bar_chart:"),
        st.Page("app_pages/activations.py", title="Activations", icon=":material/bolt:"),
        st.Page("app_pages/similarity.py", title="Similarity", icon=":material/grid_on:"),
    ],
    "Decide": [
        st.Page("app_pages/sensitivity.py", title="Sensitivity", icon=":material/troubleshoot:"),
        st.Page("app_pages/prune.py", title="Prune", icon=":material/content_cut:"),
        st.Page("app_pages/compare.py", title="Compare criteria", icon=":material/show_chart:"),
        st.Page("app_pages/tradeoffs.py", title="Trade-offs", icon=":material/scatter_plot:"),
        st.Page("app_pages/latency.py", title="Latency", icon=":material/speed:"),
        st.Page("app_pages/broke.py", title="What pruning broke",
                icon=":material/heart_broken:"),
    ],
    "Recover and export": [
        st.Page("app_pages/finetune.py", title="Fine-tune", icon=":material/model_training:"),
        st.Page("app_pages/export.py", title="Export", icon=":material/download:"),
    ],
}, expanded=True)  # more than twelve pages: Streamlit would hide some behind "View more"
navigation.run()
