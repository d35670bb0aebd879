"""`layergraft export --format gguf`: a decoder student as model.gguf, reloaded by
transformers' GGUF loader with the student's logits, in llama.cpp's own layout; and every
model the writer cannot map refused in one line with nothing written.

The tokenizer is the tiny byte-level BPE one that test_decoder_asset writes into a GGUF
(converted to a HF folder by the real `gguf_to_folder`); the tiny models have more embedding
rows than it has tokens, so the padding of the vocabulary is exercised too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error, run_cli
from test_decoder_asset import write_tiny_gguf
from tiny_decoders import HEADS, KV_HEADS, LAYERS, VOCAB, tiny_decoder, token_ids
from tiny_task import one_thread, save_tiny_teacher  # noqa: F401
from transformers import AutoModelForCausalLM, AutoTokenizer

from layergraft import api, assets
from layergraft.deploy.gguf import GGUF_FILE, PRECISION_TOLERANCE
from layergraft.errors import LayergraftError

FAMILIES = "llama, mistral, qwen2, qwen3"
# Real-scale weights for f16 and q8_0: at the tiny models' initializer range of 0.3 their
# logits are so ill-conditioned that f16 rounding alone moves them by ~1% of their scale.
REAL_SCALE = {"initializer_range": 0.02}
CASES = {
    "llama-untied-f32": ("llama", False, {}, "f32"),
    "llama-tied-f32": ("llama", True, {}, "f32"),
    "llama-tied-f16": ("llama", True, REAL_SCALE, "f16"),
    "llama-untied-q8_0": ("llama", False, REAL_SCALE, "q8_0"),
    "qwen2-untied-f32": ("qwen2", False, {"use_sliding_window": False}, "f32"),
    "qwen2-tied-f16": ("qwen2", True, {"use_sliding_window": False, **REAL_SCALE}, "f16"),
    "qwen3-untied-f32": ("qwen3", False, {"head_dim": 128}, "f32"),
    "mistral-tied-f32": ("mistral", True, {"sliding_window": None}, "f32"),
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizer")
    folder = assets.gguf_to_folder(write_tiny_gguf(root / "tiny.gguf"), root / "folder")
    return AutoTokenizer.from_pretrained(folder)


def save_student(folder: Path, tokenizer, family: str, tied: bool = False, **overrides):
    model = tiny_decoder(family, tied=tied, **overrides)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def reload(folder: Path):
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE,
                                                dtype=torch.float32).eval()


def read_gguf(folder: Path):
    import gguf

    return gguf.GGUFReader(str(folder / GGUF_FILE))


@pytest.mark.parametrize("case", list(CASES))
def test_the_gguf_reloads_with_the_students_logits(tmp_path, tokenizer, case):
    family, tied, overrides, gguf_type = CASES[case]
    model = save_student(tmp_path / "student", tokenizer, family, tied, **overrides)
    out = tmp_path / "gguf"
    report = api.export(str(tmp_path / "student"), out=out, format="gguf", gguf_type=gguf_type)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "export_report.json",
                                                    GGUF_FILE]
    assert json.loads((out / "export_report.json").read_text()) == report
    assert report["round_trip"]["passed"] and report["round_trip"]["max_abs_diff"] <= 1e-5
    assert report["tokenizer_check"]["passed"] and report["tied_embeddings"] == tied
    reloaded = reload(out)
    assert reloaded.config.num_key_value_heads == KV_HEADS
    assert reloaded.config.tie_word_embeddings == tied
    ids = token_ids(rows=1, length=20)  # longer than any sliding window would be
    with torch.no_grad():
        expected, got = model(ids).logits, reloaded(ids).logits
    diff = float((expected - got).abs().max())
    if gguf_type == "f32":
        assert diff <= 1e-5
    else:
        assert diff <= PRECISION_TOLERANCE[gguf_type] * float(expected.abs().max())
    names = {tensor.name for tensor in read_gguf(out).tensors}
    assert ("output.weight" in names) != tied and "token_embd.weight" in names


def test_the_file_holds_llama_cpps_layout_keys_and_padded_vocabulary(tmp_path, tokenizer):
    model = save_student(tmp_path / "student", tokenizer, "llama")
    api.export(str(tmp_path / "student"), out=tmp_path / "gguf", format="gguf", gguf_type="f32")
    reader = read_gguf(tmp_path / "gguf")
    tensors = {tensor.name: np.asarray(tensor.data) for tensor in reader.tensors}
    # llama.cpp rotates interleaved pairs: its row 2i+j of a head is HF's row j*d/2+i
    for name, proj, heads in (("attn_q", "q_proj", HEADS), ("attn_k", "k_proj", KV_HEADS)):
        hf = getattr(model.model.layers[1].self_attn, proj).weight.detach().numpy()
        d = hf.shape[0] // heads
        order = [h * d + j * (d // 2) + i for h in range(heads) for i in range(d // 2)
                 for j in range(2)]
        assert np.array_equal(tensors[f"blk.1.{name}.weight"], hf[order])
    assert np.array_equal(tensors["blk.1.attn_v.weight"],
                          model.model.layers[1].self_attn.v_proj.weight.detach().numpy())

    def field(key):
        value = reader.fields[key]
        return [value.contents()] if not isinstance(value.contents(), list) else value.contents()

    assert field("llama.block_count") == [LAYERS] and field("llama.context_length") == [64]
    assert field("llama.attention.head_count_kv") == [KV_HEADS]
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == VOCAB and tokens[-1] == f"[PAD{VOCAB - 1}]"
    assert field("tokenizer.ggml.model") == ["gpt2"]


def test_qwen2_keeps_its_rows_and_biases(tmp_path, tokenizer):
    model = save_student(tmp_path / "student", tokenizer, "qwen2", use_sliding_window=False)
    api.export(str(tmp_path / "student"), out=tmp_path / "gguf", format="gguf", gguf_type="f32")
    tensors = {tensor.name: np.asarray(tensor.data) for tensor in read_gguf(tmp_path / "gguf")
               .tensors}
    attention = model.model.layers[0].self_attn
    assert np.array_equal(tensors["blk.0.attn_q.weight"], attention.q_proj.weight.detach().numpy())
    assert np.array_equal(tensors["blk.0.attn_k.bias"], attention.k_proj.bias.detach().numpy())


def test_the_cli_writes_and_reports_the_round_trip(monkeypatch, capsys, tmp_path, tokenizer):
    save_student(tmp_path / "student", tokenizer, "llama", tied=True, **REAL_SCALE)
    code, out, err = run_cli(monkeypatch, capsys, "export", str(tmp_path / "student"), "--out",
                             str(tmp_path / "gguf"), "--format", "gguf")
    assert code == 0, err
    assert "round trip" in out and "f16 vs the fp32 student" in out and "model.gguf" in out
    assert "tags:\n- layergraft\n- gguf" in (tmp_path / "gguf" / "README.md").read_text()


REFUSALS = {
    "encoder": (None, f"--format gguf writes decoder LLMs of the families {FAMILIES}; "),
    "sliding-window qwen2": (("qwen2", {}), "cannot carry sliding-window attention"),
    "qwen3 with a head size its loader cannot read": (
        ("qwen3", {}), "cannot carry a head size of 8 (transformers' GGUF loader reads none "
                       "for qwen3 and takes 128)"),
    "llama with rope scaling": (("llama", {"rope_parameters": {
        "rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}),
        "cannot carry its rope scaling"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_model_the_writer_cannot_map_is_refused_in_one_line(monkeypatch, capsys, tmp_path,
                                                              tokenizer, case):
    model, fragment = REFUSALS[case]
    source = tmp_path / "source"
    if model is None:
        save_tiny_teacher(source)
    else:
        save_student(source, tokenizer, model[0], **model[1])
    code, _, err = run_cli(monkeypatch, capsys, "export", str(source), "--out",
                           str(tmp_path / "gguf"), "--format", "gguf")
    assert_one_line_error(code, err, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]


@pytest.mark.parametrize(("args", "fragment"), [
    (("--format", "gguf", "--quantize", "int8"), "--quantize: ONNX options, not for --format gguf"),
    (("--format", "gguf", "--gguf-type", "q4"), "unknown --gguf-type 'q4'"),
    (("--gguf-type", "f16"), "--gguf-type applies to --format gguf only"),
    (("--format", "tflite"), "unknown --format 'tflite'"),
])
def test_options_that_do_not_fit_the_format_are_refused(monkeypatch, capsys, tmp_path,
                                                        tokenizer, args, fragment):
    save_student(tmp_path / "source", tokenizer, "llama")
    code, _, err = run_cli(monkeypatch, capsys, "export", str(tmp_path / "source"), "--out",
                           str(tmp_path / "gguf"), *args)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "gguf").exists()


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused(tmp_path):
    from tiny_task import tiny_tokenizer

    save_student(tmp_path / "source", tiny_tokenizer(), "llama")
    with pytest.raises(LayergraftError, match="writes byte-level BPE tokenizers"):
        api.export(str(tmp_path / "source"), out=tmp_path / "gguf", format="gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]


def test_a_refusal_in_python_is_a_layergraft_error(tmp_path, tokenizer):
    save_student(tmp_path / "source", tokenizer, "mistral")  # a sliding window of 4
    with pytest.raises(LayergraftError, match="sliding-window attention of this mistral"):
        api.export(str(tmp_path / "source"), out=tmp_path / "gguf", format="gguf")
