"""A tiny character-level tokenizer that fits the tiny decoders' vocabulary (100 ids).

Every character of lower-cased English text is one token (unknown ones map to <unk>), so any
real text, the movie snippets included, tokenises into ids the tiny random decoders of
`tiny_decoders` read; the special ids match theirs (pad 0, bos 1, eos 2).
"""

from __future__ import annotations

import string

from tiny_decoders import VOCAB
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARACTERS = list(string.ascii_lowercase + string.digits + " .,!?'\"-:;()/&\n")


def tiny_char_tokenizer() -> PreTrainedTokenizerFast:
    """Lower-cased characters as tokens; decodes back to the text (as lower case)."""
    vocab = {token: i for i, token in enumerate(SPECIALS + CHARACTERS)}
    assert len(vocab) <= VOCAB
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
