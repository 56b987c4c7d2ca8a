"""A text model's samples read back as text: token ids to tokens and sentences.

A text model's validation rows are token ids (``minilm``: float32 ids, padded with its
padding id; :mod:`explorer.load.transformers`). Where the pages draw an image for an image
model (a neuron's top samples, the flipped predictions), a text model shows the sentence.
The model's card carries what it takes: ``vocabulary`` (the token of each id) and
``pad_id``; a model without them reads no text (:func:`reads_text` is False).

Sentences are joined as BERT's WordPiece decoder joins them (the ``tokenizers`` library's
``WordPiece`` decoder with its clean-up, which ``tokenizer.decode`` uses): a ``##`` piece
continues the previous word, any other token starts a new one after a space, and a few
spaces before punctuation and contractions are dropped. The framing tokens ``[CLS]`` and
``[SEP]`` and the padding are left out of a sentence, kept (bar padding) in :func:`tokens`;
``[UNK]`` and ``[MASK]`` stay, as the model read them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

FRAMING = ("[CLS]", "[SEP]")
CONTINUATION = "##"
# (before, after) in the order the WordPiece decoder's clean-up replaces them, per token
CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
           (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"),
           (" 're", "'re"))


def reads_text(card: Mapping) -> bool:
    """Whether a model with this card reads token ids it can turn back into text."""
    return "vocabulary" in card and "pad_id" in card


def samples_noun(card: Mapping) -> str:
    """What a page calls the model's samples: sentences for a text model, else images."""
    return "sentences" if reads_text(card) else "images"


def over_samples(samples: int, positions: int, values: int, noun: str) -> str:
    """What statistics over a layer's values were taken on: ``samples`` images or sentences
    (``noun``), their ``positions`` each, or for padded sentences their ``values`` tokens."""
    if values < samples * positions:
        return f"{samples:,} {noun} ({values:,} tokens, padding left out)"
    return f"{samples:,} {noun}" + (f" x {positions:,} positions" if positions > 1 else "")


def tokens(card: Mapping, row: torch.Tensor) -> list[str]:
    """The tokens of one sample ``row`` (L,) of token ids, padding left out (framing kept)."""
    vocabulary, pad = card["vocabulary"], card["pad_id"]
    return [vocabulary[i] for i in row.long().tolist() if i != pad]


def sentence(words: Sequence[str]) -> str:
    """Tokens (framing and padding already left out or not) joined into one sentence."""
    out = []
    for i, token in enumerate(t for t in words if t not in FRAMING):
        if i and token.startswith(CONTINUATION):
            token = token[len(CONTINUATION):]
        elif i:
            token = " " + token
        for before, after in CLEANUP:
            token = token.replace(before, after)
        out.append(token)
    return "".join(out)


def sentences(card: Mapping, x: torch.Tensor) -> list[str] | None:
    """The sentence of each row of ``x`` (N, L) token ids; None for a model that reads no
    text (its card has no vocabulary)."""
    if not reads_text(card):
        return None
    return [sentence(tokens(card, row)) for row in x]
