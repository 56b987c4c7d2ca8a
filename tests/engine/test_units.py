"""A unit — a layer, or a coupled group of layers — is asked of the bundle, in one place."""

import pytest


@pytest.mark.parametrize("name", ["cnn", "mlp", "resnet"])
def test_units_cover_every_prunable_layer_once(name, request):
    bundle = request.getfixturevalue(name)
    assert bundle.units("weights") == {n: (n,) for n in bundle.layer_names}
    units = bundle.units("neurons")
    members = [n for layers in units.values() for n in layers]
    assert sorted(members) == sorted(bundle.prunable_layers("neurons"))
    assert set(members).isdisjoint(bundle.unprunable("neurons"))
    assert set(members) | set(bundle.unprunable("neurons")) == set(bundle.layer_names)
    for unit, layers in units.items():
        assert layers[0] == unit  # a group is named after its first layer
        for layer in layers:
            assert bundle.linked(layer, "neurons") == layers
            assert bundle.linked(layer, "weights") == (layer,)


def test_resnet_residual_adds_couple_layers_into_one_unit(resnet):
    coupled = {u: layers for u, layers in resnet.units("neurons").items() if len(layers) > 1}
    assert coupled  # the residual adds tie the stem and the blocks' last convolutions
    for layers in coupled.values():  # coupled layers have as many neurons
        assert len({resnet.layer(n).neurons for n in layers}) == 1
