"""A tiny BERT built from a config with random weights, as minilm's architecture
(:class:`~explorer.load.transformers.TopicEmbedder`) at toy size, with random sentences:
fast stand-ins for minilm in engine tests. Needs the ``transformers`` package."""

from __future__ import annotations

import torch

from explorer.bundle import ModelBundle, bundle_from_module
from explorer.data import ValidationSet

HEADS, DIM, LENGTH, CLASSES, VOCABULARY = 4, 8, 12, 5, 50


def tiny_bert(seed: int = 1, sentences: int = 30, card: dict | None = None
              ) -> tuple[ModelBundle, ValidationSet]:
    """A 2-layer BERT (4 heads of 8) over 5 random centroids, and ``sentences`` rows of 3 to
    12 random token ids padded with 0, labelled by the model's own top class."""
    import transformers

    from explorer.load.transformers import TopicEmbedder

    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCABULARY, hidden_size=HEADS * DIM, num_hidden_layers=2,
        num_attention_heads=HEADS, intermediate_size=40, attn_implementation="eager")
    encoder = transformers.BertModel(config, add_pooling_layer=False).eval()
    model = TopicEmbedder(encoder, torch.randn(CLASSES, HEADS * DIM))
    bundle = bundle_from_module(model, "tiny-bert", (LENGTH,), card=card)
    x = torch.randint(1, VOCABULARY, (sentences, LENGTH)).float()
    x[torch.arange(LENGTH) >= torch.randint(3, LENGTH + 1, (sentences,))[:, None]] = 0
    with torch.no_grad():
        y = model(x).argmax(1)
    return bundle, ValidationSet(x, y, CLASSES, "tiny-sentences")


def module_output(model: torch.nn.Module, module: str, x: torch.Tensor) -> torch.Tensor:
    """What submodule ``module`` of ``model`` returns on ``x`` (float64), read by a forward
    hook on the Python modules: the reference statistics are computed from."""
    seen = []
    hook = model.get_submodule(module).register_forward_hook(
        lambda _m, _a, out: seen.append(out.detach().double()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        hook.remove()
    return seen[0]
