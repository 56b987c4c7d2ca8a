"""Floor for bench/browser_slider.py: a slider and a metric, nothing else."""

import streamlit as st

value = st.slider("features.0 removed %", 0, 99, 0)
st.metric("FLOPs per sample", f"{value * 1000:,}")
