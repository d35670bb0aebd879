"""The tokenizer of a GGUF export as llama.cpp's `tokenizer.ggml.*` keys.

Written the way convert_hf_to_gguf.py's `_set_vocab_gpt2` writes a byte-level BPE tokenizer
(SmolLM2's, Qwen2's): every id up to the embedding rows (ids the tokenizer lacks become
`[PADn]`, UNUSED), token types (added special tokens CONTROL, other added ones USER_DEFINED),
llama.cpp's name for the pre-tokenizer's splitting, and the merges, special ids and chat
template through `gguf.SpecialVocab`. Anything else (SentencePiece, WordPiece) is refused: the
round trip could not prove it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from layergraft.errors import LayergraftError


def _pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for the way this tokenizer splits text before BPE."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get(
            "Regex") == PRETOKENIZE_REGEX:
        return "qwen2"
    raise LayergraftError(f"--format gguf knows no llama.cpp pre-tokenizer for this "
                          f"tokenizer's splitting ({' + '.join(map(str, kinds))}); it writes "
                          "GPT-2, SmolLM and Qwen2 byte-level BPE tokenizers")


def write_tokenizer(writer, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> dict:
    """The tokenizer as `tokenizer.ggml.*` keys, the way convert_hf_to_gguf.py's
    _set_vocab_gpt2 writes a byte-level BPE one; returns what the report says of it."""
    from gguf import SpecialVocab, TokenType

    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        path = Path(folder) / "tokenizer.json"
        spec = json.loads(path.read_text()) if path.is_file() else {}
        model = spec.get("model", {})
        if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("decoder")):
            raise LayergraftError("--format gguf writes byte-level BPE tokenizers (GPT-2 "
                                  "style: SmolLM2, Qwen2); this one is "
                                  f"{model.get('type') or type(tokenizer).__name__}")
        pre = _pre_tokenizer(spec)
        special = SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    reverse = {index: token for token, index in tokenizer.get_vocab().items()}
    if max(reverse) >= vocab_size:
        raise LayergraftError(f"the tokenizer has ids up to {max(reverse)}, beyond the "
                              f"model's {vocab_size} embedding rows: --format gguf cannot "
                              "write it")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in reverse:
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
        elif index in added:
            tokens.append(reverse[index])
            types.append(TokenType.CONTROL if added[index].special else TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[index])
            types.append(TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special.add_to_gguf(writer, quiet=True)
    return {"model": "gpt2", "pre": pre, "tokens": len(reverse),
            "padded_to": vocab_size, "merges": len(special.merges),
            "special_ids": dict(special.special_token_ids),
            "chat_template": special.chat_template is not None}
