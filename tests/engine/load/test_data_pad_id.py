"""Token-id data that names its padding token (``pad_id`` beside ``x``): an uploaded
transformer's per-token statistics then leave the padding out, from Python and the CLI.

The upload is the tiny BERT exported as a ``.pt2`` program (no Python definition, so no
``pad_id`` of its own); the reference runs its Python modules with a forward hook and keeps
each sentence's tokens by the input ids themselves (padding is id 0).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("transformers")

from tiny_bert import module_output, tiny_bert  # noqa: E402

from explorer.activations import neuron_totals  # noqa: E402
from explorer.data import digits_validation  # noqa: E402
from explorer.errors import DataError  # noqa: E402
from explorer.evaluator import Evaluator  # noqa: E402
from explorer.export.outputs import mask_tensors  # noqa: E402
from explorer.load.data_file import load_data, peek_data, with_padding  # noqa: E402
from explorer.load.demos import load_demo  # noqa: E402
from explorer.load.model_file import load_model  # noqa: E402
from explorer.plan import Plan  # noqa: E402

LAYER = "bert.encoder.layer.0.intermediate.dense"
MODULE = "bert.encoder.layer.0.intermediate"  # BertIntermediate returns GELU(dense(x))
PLAN = Plan(granularity="neurons", criterion="activation",
            sparsity={LAYER: 0.5, "bert.encoder.layer.1.intermediate.dense": 0.5})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(python bundle, data, folder with bert.pt2, ids.npz (pad_id 0), ids.pt (pad_id 0)
    and plain.npz (no pad_id))."""
    python, data = tiny_bert(sentences=40)
    folder = tmp_path_factory.mktemp("padded")
    program = torch.export.export(python.model, (data.x[:2],),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    (folder / "bert.pt2").write_bytes(buffer.getvalue())
    x, y = data.x.numpy().astype(np.int64), data.y.numpy()
    np.savez(folder / "ids.npz", x=x, y=y, pad_id=0)
    torch.save({"x": torch.from_numpy(x), "y": data.y, "pad_id": 0}, folder / "ids.pt")
    np.savez(folder / "plain.npz", x=x, y=y)
    return python, data, folder


def test_pad_id_is_read_with_the_headers_from_npz_and_pt(files):
    _, data, folder = files
    for name in ("ids.npz", "ids.pt"):
        assert peek_data(folder / name).pad_id == 0
        loaded = load_data(folder / name)
        assert torch.equal(loaded.x, data.x) and torch.equal(loaded.y, data.y)
    assert peek_data(folder / "plain.npz").pad_id is None


def test_an_uploads_statistics_leave_the_padding_out(files):
    python, data, folder = files
    tokens = data.x != 0
    assert not tokens.all()
    real = module_output(python.model, MODULE, data.x)[tokens]  # (tokens, neurons)

    upload = load_model(folder / "bert.pt2", input_shape=(data.x.shape[1],))
    assert upload.real_tokens(data.x) is None  # a .pt2 program knows no padding
    padded = with_padding(upload, peek_data(folder / "ids.npz"))
    assert torch.equal(padded.real_tokens(data.x), tokens)
    totals = neuron_totals(padded, data, [LAYER], batch_size=7)[LAYER]
    assert totals.values == int(tokens.sum())
    np.testing.assert_allclose(totals.mean_abs.numpy(), real.abs().mean(0).numpy(), rtol=1e-5)
    plain = neuron_totals(upload, data, [LAYER], batch_size=7)[LAYER]
    assert plain.values == tokens.numel()  # without pad_id every position counts
    assert with_padding(upload, peek_data(folder / "plain.npz")) is upload


def test_the_cli_prunes_by_statistics_without_the_padding(files, tmp_path):
    _, data, folder = files
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(PLAN.to_dict()))
    out = tmp_path / "export"
    subprocess.run([sys.executable, "-m", "explorer.cli", "export", "--model",
                    str(folder / "bert.pt2"), "--data", str(folder / "ids.npz"), "--plan",
                    str(plan_file), "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=300)
    written = load_file(str(out / "masks.safetensors"))

    upload = load_model(folder / "bert.pt2", input_shape=(data.x.shape[1],))
    padded = with_padding(upload, peek_data(folder / "ids.npz"))
    want = mask_tensors(padded, Evaluator(padded, data).masks(PLAN))
    counted = mask_tensors(upload, Evaluator(upload, data).masks(PLAN))  # padding counted
    assert written.keys() == want.keys()
    assert all(torch.equal(written[k], want[k]) for k in want)
    assert any(not torch.equal(counted[k], want[k]) for k in want)  # the padding mattered


@pytest.mark.parametrize(("pad_id", "message"), [
    (np.array([0, 1]), "pad_id has shape (2,); expected one integer"),
    (0.5, "pad_id is 0.5; expected the padding token's id"),
    (-1, "pad_id is -1; expected the padding token's id"),
])
def test_a_bad_pad_id_is_refused_with_the_reason(files, tmp_path, pad_id, message):
    _, data, _ = files
    path = tmp_path / "bad.npz"
    np.savez(path, x=data.x.numpy(), y=data.y.numpy(), pad_id=pad_id)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        peek_data(path)
    path = tmp_path / "bad.pt"
    torch.save({"x": data.x, "y": data.y, "pad_id": torch.as_tensor(pad_id)}, path)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        peek_data(path)


def test_pad_id_needs_token_ids_and_the_models_own_padding(files, tmp_path):
    python, data, _ = files
    digits = digits_validation()
    path = tmp_path / "images.npz"
    np.savez(path, x=digits.x.numpy(), y=digits.y.numpy(), pad_id=0)
    with pytest.raises(DataError, match="pad_id is for token ids"):
        with_padding(load_demo("digits-cnn"), peek_data(path))
    path = tmp_path / "other.npz"
    np.savez(path, x=data.x.numpy(), y=data.y.numpy(), pad_id=3)
    with pytest.raises(DataError, match="pads with 0"):  # TopicEmbedder's own pad_id
        with_padding(python, peek_data(path))
