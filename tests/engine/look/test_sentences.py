"""A text model's rows read back as sentences: equal to the tokenizer's own ``decode``.

Reference: ``transformers``' tokenizer of all-MiniLM-L6-v2 (its ``decode`` of the ids
without padding, [CLS] and [SEP]), on the shipped corpus and on sentences with punctuation
and contractions; and a hand-made vocabulary whose sentence is written out by hand.
"""

from __future__ import annotations

import pytest
import torch

from explorer.load.transformers import extra_installed
from explorer.look.sentences import reads_text, samples_noun, sentences, tokens

TINY = {"vocabulary": ("[PAD]", "[CLS]", "[SEP]", "play", "##ing", "cards", ",", "fun", "!"),
        "pad_id": 0}
needs_extra = pytest.mark.skipif(not extra_installed(), reason="needs the transformers extra")


def test_pieces_join_words_punctuation_closes_up_and_framing_and_padding_go():
    row = torch.tensor([1, 3, 4, 5, 6, 7, 8, 2, 0, 0], dtype=torch.float32)
    assert sentences(TINY, row[None]) == ["playing cards, fun!"]
    assert tokens(TINY, row) == ["[CLS]", "play", "##ing", "cards", ",", "fun", "!", "[SEP]"]


def test_a_model_without_a_vocabulary_reads_no_text():
    card = {"description": "digits", "topics": ["a"]}
    assert not reads_text(card) and sentences(card, torch.zeros(2, 4)) is None
    assert samples_noun(card) == "images" and samples_noun(TINY) == "sentences"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from explorer.load.transformers import model_dir

    return AutoTokenizer.from_pretrained(model_dir(), local_files_only=True)


@needs_extra
@pytest.mark.parametrize("which", ["corpus", "contractions"])
def test_every_row_reads_as_the_tokenizer_decodes_it(tokenizer, which):
    from explorer.load.transformers import read_corpus, tokenize

    texts = read_corpus()[0] if which == "corpus" else [
        "Don't you think it's John's? I'm sure we've re-done it, they're here!",
        "Co-operate , ok ' quoted ' do not: 3.5 % of 1,000 [MASK] émigrés"]
    x = tokenize(tokenizer, texts, length=48)
    card = {"vocabulary": tuple(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))),
            "pad_id": tokenizer.pad_token_id}
    framing = {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id}
    expected = [tokenizer.decode([int(i) for i in row if int(i) not in framing])
                for row in x]  # [UNK] and [MASK] stay: they are what the model read
    assert sentences(card, x) == expected
