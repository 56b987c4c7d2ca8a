"""Loading a model by name: the bundled demo zoo."""

from __future__ import annotations

from safetensors.torch import load_file

from explorer.bundle import ModelBundle, bundle_from_module
from explorer.errors import ModelError
from explorer.load.zoo import zoo_entry


def load_demo(name: str) -> ModelBundle:
    """The demo model ``name``: trained weights from ``assets/``, or random weights from a
    fixed seed for an architecture-only entry (ResNet-18)."""
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
