"""Faster graphs: ONNX Runtime's transformer optimizer (`export --optimize`) and static int8.

The optimizer (`onnxruntime.transformers.optimizer.optimize_model`) rewrites an encoder's
graph into fused kernels: Attention, SkipLayerNormalization, BiasGelu and, where the
embeddings match, EmbedLayerNormalization. Its encoder rules are those of its "bert" model
type, which every family in `ORT_MODEL_TYPES` runs through; the attention pattern it matches
is the eager one (the SDPA graph that model.onnx is traced from fuses no attention), so the
fused graph is traced from an eager copy of the model. Measured on the tiny random models of
every family (onnxruntime 1.32): attention fuses in bert, roberta, xlm-roberta, electra and
distilbert; in mpnet (its relative-position bias) and deberta-v2 (disentangled attention)
only the LayerNorm and GELU fusions apply. Either way the fused graph is checked against
PyTorch like model.onnx, and the report names the fusions made.

Static int8 is ONNX Runtime's `quantize_static` in QDQ format: int8 weights per channel and
int8 activations (S8S8, ONNX Runtime's recommended default on x86-64) on the MatMuls, their
ranges calibrated (MinMax) on task texts; the graph is pre-processed first (ONNX shape
inference and basic optimisation).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.deploy import onnx as graph
from layergraft.errors import LayergraftError

# model_type -> the optimizer's model type whose fusion rules fit that family's graph
ORT_MODEL_TYPES: Mapping[str, str] = {family: "bert" for family in (
    "bert", "roberta", "xlm-roberta", "electra", "distilbert", "mpnet", "deberta-v2")}
STATIC_OPS = ("MatMul",)  # what static int8 quantises (Gemm of pooler/classifier stays fp32)


def optimize_onnx(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path,
                  names: Sequence[str]) -> dict:
    """Write the fused fp32 graph of `model` to `path`; returns what the optimizer did (its
    model type and the fused operators it made, and a note where attention did not fuse)."""
    model_type = model.config.model_type
    if model_type not in ORT_MODEL_TYPES:
        raise LayergraftError(
            f"ONNX Runtime's transformer optimizer has no fusions for '{model_type}' models "
            f"here (--optimize takes {', '.join(sorted(ORT_MODEL_TYPES))}): export without "
            "--optimize")
    from onnxruntime.transformers.optimizer import optimize_model

    eager = copy.deepcopy(model).float().cpu().eval()
    try:
        eager.set_attn_implementation("eager")
    except (ValueError, AttributeError):  # a family with one attention implementation
        pass
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="layergraft-opt-", dir=path.parent) as folder:
        traced = graph.export_onnx(eager, tokenizer, Path(folder) / "eager.onnx", names)
        with graph.ort_tool(f"ONNX Runtime's transformer optimizer on a {model_type} graph"):
            fused = optimize_model(str(traced), model_type=ORT_MODEL_TYPES[model_type],
                                   num_heads=int(model.config.num_attention_heads),
                                   hidden_size=int(model.config.hidden_size), use_gpu=False)
            fusions = {op: int(n) for op, n in fused.get_fused_operator_statistics().items()
                       if n}
            fused.save_model_to_file(str(path))
    record = {"tool": "onnxruntime.transformers.optimizer", "model_type":
              ORT_MODEL_TYPES[model_type], "fusions": fusions}
    if not fusions.get("Attention"):
        record["note"] = (f"no Attention fusion in this {model_type} graph (its attention is "
                          "not the BERT pattern); LayerNorm and GELU fusions only")
    return record


class _Feeds(CalibrationDataReader):
    """A CalibrationDataReader over batch dicts (the graph's inputs, as int64 arrays)."""

    def __init__(self, batches: Sequence[Mapping]):
        self.feeds = iter([{k: np.asarray(v, dtype=np.int64) for k, v in b.items()}
                           for b in batches])

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def quantize_static_int8(source: str | Path, target: str | Path,
                         calibration: Sequence[Mapping]) -> Path:
    """The static (QDQ) int8 version of an fp32 graph, calibrated on `calibration` batches."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = _Feeds(calibration)
    target = Path(target)
    with (tempfile.TemporaryDirectory(prefix="layergraft-qdq-", dir=target.parent) as folder,
          graph.ort_tool(f"static int8 quantisation of {Path(source).name}")):
        prepared = Path(folder) / "prepared.onnx"
        # symbolic shape inference: skipped, it writes a debug file to the working folder
        # when it cannot finish (Attention's dynamic shapes), and ONNX's own suffices here
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), reader, quant_format=QuantFormat.QDQ,
                        per_channel=graph.PER_CHANNEL, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=list(STATIC_OPS),
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return target
