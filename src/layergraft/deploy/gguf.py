"""GGUF export of a decoder student, for llama.cpp and ollama (they read GGUF, not safetensors).

`export_gguf` writes `model.gguf` with the `gguf` package's own writer: llama.cpp's tensor names
(`gguf.get_tensor_name_map`), its hyper-parameter keys, and the byte-level BPE tokenizer as
`tokenizer.ggml.*` keys (`layergraft.deploy.gguf_vocab`). For the `llama` architecture the
Q/K rows are permuted as convert_hf_to_gguf.py permutes them: llama.cpp rotates interleaved
pairs, HF rotates halves. Qwen2/Qwen3 use NEOX rope, so nothing moves.

Two checks, both by loading the file back with transformers' GGUF loader (`gguf_file=`):
- `round_trip`: the reloaded model against the student with its weights rounded exactly as the
  file stores them (f32: the student itself). The writer must be exact here, within
  ROUND_TRIP_TOLERANCE; a wrong name, permutation or hyper-parameter shows at once.
- `precision`: the reloaded model against the fp32 student, the cost of f16 or q8_0, within
  PRECISION_TOLERANCE of the logits' scale (max |logit|), with top-1 agreement.
The tokenizer is checked too: the reloaded one must give the student's ids.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from layergraft.deploy import gguf_vocab
from layergraft.errors import LayergraftError

GGUF_FILE = "model.gguf"
GGUF_TYPES = ("f32", "f16", "q8_0")
DEFAULT_GGUF_TYPE = "f16"
# model_type -> gguf architecture name; llama.cpp runs Mistral (no sliding window) as llama
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
PERMUTED_ARCHITECTURES = ("llama",)  # llama.cpp's rope type NORM: Q/K rows interleaved
ROUND_TRIP_TOLERANCE = 1e-5  # max abs logit difference from the student as the file stores it
# max abs logit difference from the fp32 student, as a fraction of its max |logit|; a
# SmolLM2-135M 30 -> 22 student measured 5.3e-4 (f16) and 1.1e-2 (q8_0)
PRECISION_TOLERANCE = {"f32": 1e-6, "f16": 2e-3, "q8_0": 3e-2}
Q8_0_BLOCK = 32  # a q8_0 row must be a whole number of blocks; others stay f16 (as llama.cpp)
VERIFY_TEXTS = ("A quiet, moving film that stays with you.",
                "The plot made no sense and the acting was worse.",
                "abc ab c 123 Hello, world!")
RANDOM_IDS = 48  # plus one seeded sequence of random ids over the whole vocabulary


def check_family(config: PretrainedConfig) -> str:
    """The gguf architecture of a decoder the writer maps exactly; anything else is refused
    in one line, before anything is written."""
    from layergraft.surgery.arch import spec_for_config

    model_type = getattr(config, "model_type", None)
    families = ", ".join(ARCHITECTURES)
    if model_type not in ARCHITECTURES:
        kind = "a decoder" if spec_for_config(config).decoder else "an encoder"
        raise LayergraftError(f"--format gguf writes decoder LLMs of the families {families}; "
                              f"'{config.name_or_path}' is {kind} of type '{model_type}' "
                              "(export it as ONNX, the default --format)")
    rope = dict(getattr(config, "rope_parameters", None) or {})
    windows = [t for t in getattr(config, "layer_types", None) or () if t != "full_attention"]
    unmappable = {
        "its rope scaling": rope.get("rope_type", "default") != "default",
        "sliding-window attention": bool(windows) or (model_type == "mistral"
                                                      and config.sliding_window is not None),
        f"activation '{config.hidden_act}' (only SiLU)": config.hidden_act != "silu",
        "llama biases": ARCHITECTURES[model_type] == "llama" and (
            getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)),
        f"a head size of {head_dim(config)} (transformers' GGUF loader reads none for "
        f"{model_type} and takes {reloaded_head_dim(config)})":
            head_dim(config) != reloaded_head_dim(config),
    }
    for what, refused in unmappable.items():
        if refused:
            raise LayergraftError(f"--format gguf cannot carry {what} of this {model_type} "
                                  f"model ('{config.name_or_path}'); it writes {families} "
                                  "decoders with full attention, default rope and SiLU")
    return ARCHITECTURES[model_type]


def head_dim(config: PretrainedConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def reloaded_head_dim(config: PretrainedConfig) -> int:
    """The head size transformers' GGUF loader gives this family: llama's it reads from
    rope.dimension_count; qwen2's and qwen3's it does not read, so their config default holds."""
    if ARCHITECTURES[config.model_type] == "llama":
        return head_dim(config)
    from transformers import AutoConfig

    return head_dim(AutoConfig.for_model(config.model_type, hidden_size=config.hidden_size,
                                         num_attention_heads=config.num_attention_heads))


@dataclass(frozen=True)
class Tensor:
    """One tensor as the file holds it (`data`, `raw_dtype`) and as it reads back in HF layout
    (`stored`, the weights of the round-trip reference)."""

    name: str
    hf_name: str
    data: np.ndarray
    raw_dtype: object
    stored: torch.Tensor


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: each head's rotary halves interleaved."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _encode(weights: torch.Tensor, gguf_type: str):
    """(data, raw dtype, what reads back) of one HF tensor at the file's precision: 1-D
    tensors (norms, biases) stay f32, as llama.cpp keeps them."""
    from gguf import GGMLQuantizationType, quants

    array = weights.detach().float().cpu().numpy()
    if array.ndim == 1 or gguf_type == "f32":
        return array, GGMLQuantizationType.F32, torch.from_numpy(array.copy())
    if gguf_type == "q8_0" and array.shape[-1] % Q8_0_BLOCK == 0:
        data = quants.quantize(array, GGMLQuantizationType.Q8_0)
        back = quants.dequantize(data, GGMLQuantizationType.Q8_0)
        return data, GGMLQuantizationType.Q8_0, torch.from_numpy(back.astype(np.float32))
    half = array.astype(np.float16)
    return half, GGMLQuantizationType.F16, torch.from_numpy(half.astype(np.float32))


def gguf_tensors(model: PreTrainedModel, arch: str, gguf_type: str) -> Iterator[Tensor]:
    """Every parameter under its llama.cpp name; tied embeddings give no `output` tensor."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    config = model.config
    arch_enum = next(key for key, value in MODEL_ARCH_NAMES.items() if value == arch)
    names = get_tensor_name_map(arch_enum, config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    for hf_name, weights in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        base, _, suffix = hf_name.rpartition(".")
        name = names.get_name(base)
        if name is None:
            raise LayergraftError(f"--format gguf cannot map '{hf_name}' of this "
                                  f"{config.model_type} model to a {arch} GGUF tensor")
        data, raw_dtype, stored = _encode(weights, gguf_type)
        if arch in PERMUTED_ARCHITECTURES and name.endswith((".attn_q", ".attn_k")):
            data = _permute(data, heads if name.endswith(".attn_q") else kv_heads)
        yield Tensor(f"{name}.{suffix}", hf_name, data, raw_dtype, stored)


def _hyper_parameters(config: PretrainedConfig, vocab_size: int) -> dict:
    heads = config.num_attention_heads
    rope = dict(getattr(config, "rope_parameters", None) or {})
    return {"context_length": config.max_position_embeddings,
            "embedding_length": config.hidden_size, "block_count": config.num_hidden_layers,
            "feed_forward_length": config.intermediate_size, "head_count": heads,
            "head_count_kv": getattr(config, "num_key_value_heads", None) or heads,
            "rope_freq_base": float(rope.get("rope_theta", getattr(config, "rope_theta", 1e4))),
            "layer_norm_rms_eps": float(config.rms_norm_eps), "vocab_size": vocab_size,
            "rope_dimension_count": head_dim(config)}


def _write_hyper_parameters(writer, values: dict) -> None:
    """Each value through its GGUFWriter.add_* method; key/value length = head dim."""
    for key, value in values.items():
        getattr(writer, f"add_{key}")(value)
    writer.add_key_length(values["rope_dimension_count"])
    writer.add_value_length(values["rope_dimension_count"])


def write_gguf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path,
               gguf_type: str, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Write `path`; returns the report's record of it and the stored weights (HF names)."""
    import gguf

    arch = check_family(model.config)
    vocab_size = model.get_input_embeddings().weight.shape[0]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32,
                          "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[gguf_type])
    if gguf_type == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    values = _hyper_parameters(model.config, vocab_size)
    _write_hyper_parameters(writer, values)
    tokenizer_record = gguf_vocab.write_tokenizer(writer, tokenizer, vocab_size)
    stored, kinds = {}, {}
    for tensor in gguf_tensors(model, arch, gguf_type):
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.raw_dtype)
        stored[tensor.hf_name] = tensor.stored
        kind = gguf.GGMLQuantizationType(tensor.raw_dtype).name
        kinds[kind] = kinds.get(kind, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return ({"architecture": arch, "gguf_type": gguf_type, "tensors": kinds,
             "permuted_qk": arch in PERMUTED_ARCHITECTURES,
             "tied_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
             "hyper_parameters": values, "tokenizer": tokenizer_record}, stored)


def verification_ids(tokenizer: PreTrainedTokenizerBase, vocab_size: int,
                     context: int) -> list[torch.Tensor]:
    """VERIFY_TEXTS as the student tokenizes them, and seeded random ids over the whole
    vocabulary (so every embedding row, padding rows included, is read back)."""
    rows = [tokenizer(text, return_tensors="pt")["input_ids"] for text in VERIFY_TEXTS]
    generator = torch.Generator().manual_seed(0)
    rows.append(torch.randint(0, vocab_size, (1, min(RANDOM_IDS, context)), generator=generator))
    return [row for row in rows if row.shape[1]]


@torch.no_grad()
def logits(model: PreTrainedModel, rows: list[torch.Tensor]) -> torch.Tensor:
    model.eval()
    return torch.cat([model(input_ids=row).logits[0].float() for row in rows])


def verify_gguf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path,
                stored: dict[str, torch.Tensor], gguf_type: str) -> dict:
    """`round_trip`, `precision` and `tokenizer` checks of the module docstring. Loads the
    stored weights into `model`: call it last."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = verification_ids(tokenizer, model.get_input_embeddings().weight.shape[0],
                            model.config.max_position_embeddings)
    student = logits(model, rows)
    model.load_state_dict(stored, strict=False)
    as_stored = logits(model, rows)
    reloaded_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE,
                                                          dtype=torch.float32)
    reloaded = logits(reloaded_model, rows)
    data = f"{len(VERIFY_TEXTS)} built-in texts and {RANDOM_IDS} random ids"
    trip = float((reloaded - as_stored).abs().max())
    error = float((reloaded - student).abs().max())
    scale = float(student.abs().max())
    gguf_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    same = [gguf_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
            for text in VERIFY_TEXTS]
    return {
        "round_trip": {"data": data, "positions": int(student.shape[0]),
                       "reference": f"the student with its weights as {gguf_type}",
                       "max_abs_diff": trip, "tolerance": ROUND_TRIP_TOLERANCE,
                       "passed": trip <= ROUND_TRIP_TOLERANCE},
        "precision": {"data": data, "reference": "the fp32 student", "max_abs_diff": error,
                      "max_abs_logit": scale, "relative": error / max(scale, 1e-12),
                      "tolerance": PRECISION_TOLERANCE[gguf_type],
                      "top1_agreement": float((reloaded.argmax(-1) == student.argmax(-1))
                                              .float().mean()),
                      "passed": error <= PRECISION_TOLERANCE[gguf_type] * scale},
        "tokenizer_check": {"texts": len(VERIFY_TEXTS), "same_ids": sum(same),
                            "passed": all(same)},
        "loaded_as": type(reloaded_model).__name__,
    }


def failures(report: dict) -> list[str]:
    """One phrase per failed check of a GGUF report."""
    found = []
    for key in ("round_trip", "precision"):
        record = report[key]
        if not record["passed"]:
            found.append(f"{key}: max abs logit difference {record['max_abs_diff']:.2e} from "
                         f"{record['reference']}")
    if not report["tokenizer_check"]["passed"]:
        found.append("tokenizer: the reloaded tokenizer gives other ids")
    return found


def parse_gguf_type(value: str | None) -> str:
    value = (value or DEFAULT_GGUF_TYPE).lower().replace("-", "_")
    if value not in GGUF_TYPES:
        raise LayergraftError(f"unknown --gguf-type '{value}': choose one of "
                              f"{', '.join(GGUF_TYPES)}")
    return value


def export_gguf(model_path: str, out: str | os.PathLike, *, gguf_type: str | None = None,
                overwrite: bool = False) -> dict:
    """`model_path` (a decoder folder) as `out/model.gguf`, verified by reloading it; beside
    it export_report.json, the graft manifest and a model card. Written to a staging folder
    and moved into place; nothing is written when the model is refused, and a failed check
    is raised as one line after the report is written."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from layergraft.deploy.export import REPORT_FILE, check_tokenizer, publish, staging_folder
    from layergraft.models import check_output_dir, load_config
    from layergraft.report.gguf_card import write_gguf_card
    from layergraft.surgery.manifest import MANIFEST_NAME
    from layergraft.utils import versions

    gguf_type = parse_gguf_type(gguf_type)
    check_family(load_config(model_path))
    check_tokenizer(model_path)
    target = Path(out)
    check_output_dir(target, overwrite)
    if (target / GGUF_FILE).exists() and not overwrite:
        raise LayergraftError(f"'{target}' already holds a model: choose another --out or "
                              "pass --overwrite")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    manifest = Path(model_path) / MANIFEST_NAME
    staging = staging_folder(target)
    try:
        name = f"{Path(str(model_path)).name} ({model.config.num_hidden_layers} layers)"
        written, stored = write_gguf(model, tokenizer, staging / GGUF_FILE, gguf_type, name)
        if manifest.is_file():
            shutil.copy2(manifest, staging / MANIFEST_NAME)
        checks = verify_gguf(model, tokenizer, staging, stored, gguf_type)
        report = {"source": str(model_path), "format": "gguf",
                  "model_type": model.config.model_type,
                  "layers": model.config.num_hidden_layers,
                  "exporter": f"gguf.GGUFWriter, '{written['architecture']}' architecture",
                  **written, "files": {GGUF_FILE: (staging / GGUF_FILE).stat().st_size},
                  **checks, "versions": {**versions(), "gguf": _gguf_version()}}
        publish(staging, target, report, manifest, write_gguf_card)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    failed = failures(report)
    if failed:
        raise LayergraftError(f"GGUF export verification failed (see {target / REPORT_FILE}): "
                              + "; ".join(failed))
    return report


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")
