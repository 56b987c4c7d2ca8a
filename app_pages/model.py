"""Model: choose or upload a model and data; its layers, costs and baseline accuracy."""

import streamlit as st

from explorer.errors import ExplorerError
from explorer.look.sentences import samples_noun
from explorer.ui import state, texts
from explorer.ui.format import count, nbytes, percent
from explorer.ui.layout import page_setup
from explorer.ui.views import heads as heads_view

session = page_setup("Pruning Explorer", texts.MODEL)
bundle = session.bundle
st.markdown(texts.INTRO)

waiting = state.PENDING_KEY in st.session_state  # opened from an upload's link
with st.expander("Upload your own model", expanded=waiting), st.form("upload", border=False):
    st.markdown(
        "A **TorchScript** file, a **torch.export** program (`.pt2`, exported with a dynamic "
        "batch dimension), or a **safetensors / state_dict** file of a demo architecture; "
        "validation data as `.npz` (arrays `x`, `y`) or `.pt` (tensors `x`, `y`); with `x` "
        "alone (no labels) plans are judged by their fidelity to the dense model. Without "
        "data, a digits model is evaluated on the digits validation split. Token ids "
        "(`x` of shape (N, L)) padded to one length may name their padding token as "
        "`pad_id` beside them (`np.savez(path, x=ids, y=y, pad_id=tokenizer.pad_token_id)`): "
        "per-token statistics then leave the padding out."
    )
    st.caption(texts.UPLOAD_SAFETY)
    model_file = st.file_uploader("Model file", key="upload_model")
    data_file = st.file_uploader("Validation data (optional)", key="upload_data")
    calibration_file = st.file_uploader(
        "Calibration images (optional, for models with BatchNorm)", key="upload_calibration",
        help="a few hundred images that are NOT the validation data, same format: each "
             "pruned plan's BatchNorm statistics are re-estimated on them before it is "
             "judged. Without them, a BatchNorm model uploaded with its own data is judged "
             "with the dense model's statistics (raw)")
    if st.form_submit_button("Load"):
        if model_file is None:  # e.g. Load pressed before the file finished uploading
            st.warning("Choose a model file first and wait until its upload has finished, "
                       "then press Load.")
        else:
            try:
                with st.spinner("Loading and analysing the model..."):
                    state.add_upload(model_file, data_file, calibration_file)
                st.rerun()
            except ExplorerError as exc:
                st.error(f"Could not load it: {exc} The current model stays loaded.")

dense = session.dense()
samples = samples_noun(bundle.card)  # images, or a text model's sentences
st.subheader(f"{bundle.name}")
if bundle.card.get("architecture"):
    st.caption(bundle.card["architecture"])
if bundle.card.get("pad_id") is not None:
    st.caption(f"Token ids padded with {bundle.card['pad_id']}: per-token statistics "
               "(activations, APoZ, Wanda's input norms, block influence) leave the padding "
               "out.")
cols = st.columns(4)
if dense.accuracy is None:
    note = state.NO_DATA_NOTE if session.data is None else state.NO_LABELS_NOTE
    cols[0].metric("Baseline accuracy", "n/a", help=note)
    st.info(note)
else:
    lo, hi = dense.accuracy_ci
    cols[0].metric("Baseline accuracy", percent(dense.accuracy),
                   help=f"95% Wilson interval on {dense.samples} validation {samples}")
    cols[0].caption(f"95% interval {percent(lo)} - {percent(hi)} · {dense.samples} {samples}")
cols[1].metric("Parameters", count(dense.params))
cols[2].metric("Size (fp32)", nbytes(dense.size_bytes["dense"]))
cols[3].metric("FLOPs per sample", count(dense.flops["dense"]),
               help="2 FLOPs per multiply-add, as torch.utils.flop_counter counts")



def _removable(layer) -> str:
    if not layer.neuron_prunable:
        return f"no: {layer.neuron_reason}"
    others = [n for n in bundle.linked(layer.name, "neurons") if n != layer.name]
    return f"yes, together with {', '.join(others)} (coupled)" if others else "yes"


rows = []
for layer, lm in zip(bundle.layers, dense.layers, strict=True):
    rows.append({
        "layer": layer.name,
        "type": layer.kind,
        "weight shape": " x ".join(map(str, layer.weight_shape)),
        "parameters": lm.params,
        "FLOPs / sample": layer.flops,
        "share of FLOPs": layer.flops / bundle.flops,
        "neurons removable": _removable(layer),
    })
st.dataframe(
    rows, hide_index=True, key="layer_table",
    column_config={
        "share of FLOPs": st.column_config.ProgressColumn(format="percent", min_value=0,
                                                          max_value=1),
        "parameters": st.column_config.NumberColumn(format="localized"),
        "FLOPs / sample": st.column_config.NumberColumn(format="localized"),
    },
)
other = bundle.flops - sum(la.flops for la in bundle.layers)
if other:
    st.caption(f"Other FLOPs (not in prunable layers): {count(other)} per sample.")

if bundle.heads:
    heads_view.importance_section(session)
