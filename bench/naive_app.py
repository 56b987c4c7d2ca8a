"""The yardstick for bench/browser_slider.py: a naive one-file Streamlit pruning app.

What a quick notebook-turned-app does on every slider change: the whole script reruns,
the model is deep-copied and pruned with torch.nn.utils.prune, a full forward pass runs,
FLOPs are counted afresh with FlopCounterMode, and px.histogram draws the raw weights.
Set NAIVE_METRICS_FIRST=1 to show the metrics before the histogram is built (the most
favourable order for the naive app); by default the script draws what it computed in
the order it computed it, histogram then metrics, as DESIGN.md's yardstick does.
"""

import copy
import os

import plotly.express as px
import streamlit as st
import torch
from torch.nn.utils import prune
from torch.utils.flop_counter import FlopCounterMode

from explorer.data import digits_validation
from explorer.load.demos import load_demo

bundle = st.cache_resource(load_demo)("digits-cnn")
data = st.cache_resource(digits_validation)()
st.title("Naive pruning app")
amounts = {la.name: st.slider(f"{la.name} removed %", 0, 99, 0) / 100 for la in bundle.layers}
model = copy.deepcopy(bundle.model)
for name, amount in amounts.items():
    prune.l1_unstructured(model.get_submodule(name), "weight", amount=amount)
with torch.no_grad():
    accuracy = (model(data.x).argmax(1) == data.y).float().mean().item()
    with FlopCounterMode(display=False) as counter:
        model(data.x[:1])
per_module = counter.get_flop_counts()
flops = 0
for name in amounts:
    weight = model.get_submodule(name).weight
    density = float(weight.count_nonzero()) / weight.numel()
    flops += sum(per_module[f"DigitsCNN.{name}"].values()) * density


def show_metrics() -> None:
    st.metric("Accuracy", f"{accuracy * 100:.2f}%")
    st.metric("FLOPs per sample", f"{flops:,.0f}")


if os.environ.get("NAIVE_METRICS_FIRST"):
    show_metrics()
weights = torch.cat([model.get_submodule(n).weight.detach().abs().flatten() for n in amounts])
st.plotly_chart(px.histogram(x=weights.numpy(), nbins=200))
if not os.environ.get("NAIVE_METRICS_FIRST"):
    show_metrics()
