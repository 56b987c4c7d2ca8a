"""Pruning Explorer: Streamlit entry point (the pages come with the app issue)."""

import streamlit as st

from explorer.data import digits_validation
from explorer.evaluator import Evaluator
from explorer.models import load_demo
from explorer.plan import Plan
from explorer.zoo import ZOO

st.set_page_config(page_title="Pruning Explorer", layout="wide")
st.title("Pruning Explorer")
name = st.sidebar.selectbox("Demo model", list(ZOO))
bundle = st.cache_resource(load_demo)(name)
metrics = Evaluator(bundle, digits_validation()).evaluate(Plan())
st.metric("Validation accuracy", f"{metrics.accuracy:.2%}")
