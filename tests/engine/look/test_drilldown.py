"""One neuron up close: top images against forward hooks, captum's conductance against
completeness and a plain-autograd path integral, and the shared model left untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hooks import relu_outputs

from explorer.errors import DataError, ExplorerError
from explorer.load.model_file import load_model
from explorer.look.drilldown import N_STEPS, attribution_map, rank_images, top_images

# Prunable layer -> the nn.ReLU module right after it (through BatchNorm in the ResNet),
# written out by hand from the zoo's architectures.
RELU_AFTER = [
    ("mlp", "fc1", "relu1"),
    ("mlp", "fc2", "relu2"),
    ("cnn", "features.0", "features.1"),
    ("cnn", "features.2", "features.3"),
    ("cnn", "classifier.3", "classifier.4"),
    ("resnet", "stem.0", "stem.2"),
    ("resnet", "layer2.conv1", "layer2.relu1"),
]
OUTPUT_LAYER = {"mlp": "fc3", "cnn": "classifier.5", "resnet": "fc"}




def per_image_means(out: torch.Tensor) -> torch.Tensor:
    """(N, neurons): a linear neuron's value, a channel's mean over its positions."""
    return out.flatten(2).mean(dim=2) if out.dim() == 4 else out


def conductance_reference(bundle, layer: str, x: torch.Tensor, unit: tuple[int, ...],
                          target: int, steps: int = 2000) -> torch.Tensor:
    """Conductance of ``unit`` of ``layer``'s output for the ``target`` logit, by the
    midpoint rule in plain autograd: sum over steps of dF/dy_unit * dy_unit/dx, times x.

    One backward through ``y_unit * stop_gradient(dF/dy_unit)`` gives their product.
    """
    model = copy.deepcopy(bundle.model)
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    xs = (alphas.float().view(-1, *[1] * x.dim()) * x).requires_grad_()
    caught = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: caught.setdefault("y", out))
    logits = model(xs)
    handle.remove()
    y = caught["y"]
    at = (slice(None), *unit)
    dF_dy = torch.autograd.grad(logits[:, target].sum(), y, retain_graph=True)[0][at]
    (grad,) = torch.autograd.grad((y[at] * dF_dy.detach()).sum(), xs)
    return (grad.double().mean(dim=0) * x.double()).float()


def logit_gain(bundle, x: torch.Tensor, target: int) -> float:
    """The ``target`` logit at ``x`` minus at the zero baseline."""
    with torch.no_grad():
        logits = bundle.model(torch.stack([x, torch.zeros_like(x)]))
    return float(logits[0, target] - logits[1, target])


# -- top images ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "layer", "relu"), RELU_AFTER,
                         ids=[f"{f}-{la}" for f, la, _ in RELU_AFTER])
def test_top_images_equal_a_forward_hook_on_the_relu(fixture, layer, relu, request, digits):
    bundle = request.getfixturevalue(fixture)
    means = per_image_means(relu_outputs(bundle, relu, digits.x))
    for neuron in {0, int(means.mean(dim=0).argmax()), bundle.layer(layer).neurons - 1}:
        top = top_images(bundle, digits, layer, neuron, k=8)
        assert top.indices.shape == top.values.shape == (8,)
        expected = torch.sort(means[:, neuron], descending=True).values[:8]
        np.testing.assert_allclose(top.values, expected.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(means[top.indices, neuron].numpy(), top.values,
                                   rtol=1e-5, atol=1e-6)
        assert len(set(top.indices.tolist())) == 8


def test_rank_images_breaks_ties_by_index_and_checks_its_arguments():
    acts = np.zeros((5, 2, 3), dtype=np.float32)
    acts[3, 1] = [1.0, 2.0, 3.0]  # mean 2
    acts[1, 1] = [2.0, 2.0, 2.0]  # mean 2 as well: the lower index first
    top = rank_images(acts, 1, k=3)
    assert top.indices.tolist() == [1, 3, 0]
    np.testing.assert_allclose(top.values, [2.0, 2.0, 0.0])
    assert rank_images(acts, 1, k=50).indices.size == 5
    for bad in (dict(neuron=2), dict(neuron=-1), dict(neuron=True), dict(k=0)):
        with pytest.raises(ExplorerError):
            rank_images(acts, **{"neuron": 0, **bad})
    per_image = acts.mean(axis=2, dtype=np.float64)  # (N, neurons): the same ranking
    assert rank_images(per_image, 1, k=3).indices.tolist() == [1, 3, 0]
    with pytest.raises(ExplorerError, match="positions"):
        rank_images(acts[None], 0)


def test_top_images_names_the_layers_that_exist(mlp, digits):
    with pytest.raises(ExplorerError, match="fc1, fc2, fc3"):
        top_images(mlp, digits, "conv9", 0)


# -- attribution ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "layer"), [
    ("mlp", "fc1"), ("cnn", "features.2"), ("cnn", "classifier.1"), ("resnet", "stem.0"),
    ("resnet", "layer1.conv2"),
])
def test_attribution_has_the_image_shape_and_is_finite_and_detached(fixture, layer, request,
                                                                    digits):
    bundle = request.getfixturevalue(fixture)
    image = digits.x[7]
    result = attribution_map(bundle, layer, 2, image)
    assert result.map.shape == image.shape == bundle.input_shape
    assert torch.isfinite(result.map).all()
    assert not result.map.requires_grad and result.map.grad_fn is None
    assert result.n_steps == N_STEPS
    with torch.no_grad():
        assert result.target == int(bundle.model(image[None]).argmax())
    assert result.unit[0 if bundle.layer(layer).kind == "conv2d" else -1] == 2


@pytest.mark.parametrize("fixture", ["mlp", "cnn", "resnet"])
def test_an_output_neuron_conducts_exactly_its_own_logit_gain(fixture, request, digits):
    """Completeness: for the output neuron of the target class, F is the neuron itself, so
    the map sums to the neuron's output at the image minus at the zero baseline; the other
    output neurons carry nothing to that logit."""
    bundle = request.getfixturevalue(fixture)
    layer = OUTPUT_LAYER[fixture]
    for index in (0, 123):
        image = digits.x[index]
        result = attribution_map(bundle, layer, int(digits.y[index]), image,
                                 target=int(digits.y[index]))
        gain = logit_gain(bundle, image, result.target)
        assert float(result.map.sum()) == pytest.approx(gain, rel=1e-2)
        other = (result.target + 1) % bundle.num_classes
        assert torch.count_nonzero(
            attribution_map(bundle, layer, other, image, target=result.target).map) == 0


@pytest.mark.parametrize(("fixture", "layer"), [("mlp", "fc2"), ("cnn", "classifier.3")])
def test_conductances_of_a_whole_layer_add_up_to_the_logit_gain(fixture, layer, request,
                                                                digits):
    """Completeness across a layer every path crosses: summed over its neurons."""
    bundle = request.getfixturevalue(fixture)
    image = digits.x[42]
    total = sum(float(attribution_map(bundle, layer, n, image).map.sum())
                for n in range(bundle.layer(layer).neurons))
    target = attribution_map(bundle, layer, 0, image).target
    assert total == pytest.approx(logit_gain(bundle, image, target), rel=5e-3)


@pytest.mark.parametrize(("fixture", "layer", "relu"), [
    ("mlp", "fc1", "relu1"), ("cnn", "features.2", "features.3"),
    ("resnet", "stem.0", "stem.2"), ("resnet", "layer2.conv1", "layer2.relu1"),
])
def test_attribution_equals_a_plain_autograd_path_integral(fixture, layer, relu, request,
                                                           digits):
    bundle = request.getfixturevalue(fixture)
    neuron = int(per_image_means(relu_outputs(bundle, relu, digits.x)).mean(dim=0).argmax())
    index = int(top_images(bundle, digits, layer, neuron, k=1).indices[0])
    image = digits.x[index]
    result = attribution_map(bundle, layer, neuron, image)
    if bundle.layer(layer).kind == "conv2d":  # the channel's most active position
        channel = relu_outputs(bundle, relu, image[None])[0, neuron]
        assert result.unit[1:] == tuple(
            int(i) for i in np.unravel_index(int(channel.argmax()), channel.shape))
    expected = conductance_reference(bundle, layer, image, result.unit, result.target)
    scale = float(expected.abs().max())
    assert scale > 0
    # The default steps: close pixel by pixel, closer in sum; many steps: the same integral.
    torch.testing.assert_close(result.map, expected, rtol=0, atol=0.05 * scale)
    assert float(result.map.sum()) == pytest.approx(
        float(expected.sum()), abs=0.02 * float(expected.abs().sum()))
    finer = attribution_map(bundle, layer, neuron, image, n_steps=512)
    assert finer.unit == result.unit and finer.target == result.target
    torch.testing.assert_close(finer.map, expected, rtol=0, atol=0.005 * scale)


def test_attribution_leaves_the_shared_model_untouched(resnet, digits):
    model = resnet.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    for layer in ("stem.0", "layer3.conv2", "fc"):
        attribution_map(resnet, layer, 1, digits.x[3])
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks


def test_a_model_known_only_as_an_exported_graph_cannot_be_explained(mlp, digits, tmp_path):
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(mlp.model, (torch.zeros((2, *mlp.input_shape)),),
                                  dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "mlp.pt2")
    exported = load_model(tmp_path / "mlp.pt2")
    assert "fc1" in exported.layer_names
    with pytest.raises(ExplorerError, match="captum cannot explain"):
        attribution_map(exported, "fc1", 0, digits.x[0])
    assert top_images(exported, digits, "fc1", 0, k=2).indices.size == 2  # no module needed


def test_attribution_checks_its_arguments(cnn, digits):
    with pytest.raises(DataError, match=r"\(1, 8, 8\)"):
        attribution_map(cnn, "features.0", 0, torch.zeros(8, 8))
    with pytest.raises(ExplorerError, match="0..31"):
        attribution_map(cnn, "features.0", 32, digits.x[0])
    with pytest.raises(ExplorerError, match="target"):
        attribution_map(cnn, "features.0", 0, digits.x[0], target=10)
    assert attribution_map(cnn, "features.0", 0, digits.x[0][None]).map.shape == (1, 8, 8)
