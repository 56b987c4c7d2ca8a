"""Loading a model by name: the bundled demo zoo, and the pretrained models of optional
extras (:data:`~explorer.load.zoo.PRETRAINED`), which bring their own evaluation data."""

from __future__ import annotations

from safetensors.torch import load_file

from explorer.bundle import ModelBundle, bundle_from_module
from explorer.data import ValidationSet
from explorer.errors import ModelError
from explorer.load.zoo import PRETRAINED, zoo_entry


def load_demo(name: str) -> ModelBundle:
    """The demo model ``name``: trained weights from ``assets/``, or random weights from a
    fixed seed for an architecture-only entry (ResNet-18); a pretrained model from its
    package (:func:`load_pretrained`)."""
    if name in PRETRAINED:
        return load_pretrained(name)[0]
    entry = zoo_entry(name)
    if entry.architecture_only:
        model = entry.random_model()
    else:
        if not entry.weights_path.exists():
            raise ModelError(
                f"The weights of '{name}' are missing ({entry.weights_path}); "
                "run `pruning-explorer train-demos` to regenerate them."
            )
        model = entry.build()
        model.load_state_dict(load_file(str(entry.weights_path)))
    model.eval()
    return bundle_from_module(model, name, entry.input_shape, card=entry.card(), source="zoo")


def load_pretrained(name: str) -> tuple[ModelBundle, ValidationSet]:
    """The pretrained model ``name`` and the labelled evaluation set it comes with.

    Raises:
        ModelError: ``name`` is not pretrained, or its optional extra is not installed.
    """
    if name not in PRETRAINED:
        zoo_entry(name)  # the error that lists the names
        raise ModelError(f"'{name}' is a demo model, not a pretrained one.")
    from explorer.load.transformers import load_minilm

    return load_minilm()
