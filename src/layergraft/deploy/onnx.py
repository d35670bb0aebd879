"""ONNX export of a sequence classifier, ONNX Runtime sessions, and dynamic int8 quantisation.

The graph comes from `torch.onnx.export` with the TorchScript exporter (`dynamo=False`),
opset 17, dynamic `batch` and `sequence` axes on every input. Inputs are `input_ids`,
`attention_mask` and, only when the model's tokenizer produces them and the model embeds
them, `token_type_ids` (int64, shape batch x sequence); the output is `logits`
(float32, batch x num_labels). int8 is ONNX Runtime's `quantize_dynamic`: int8 weights
(QInt8), activations quantised on the fly.

Why not Optimum's exporter: `optimum-onnx` 0.1.0 requires transformers<4.58 and layergraft
needs transformers 5.x, so pip cannot install both (ResolutionImpossible).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.data.encoding import token_limit
from layergraft.errors import LayergraftError

OPSET = 17
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OUTPUT = "logits"
BASE_INPUTS = ("input_ids", "attention_mask")
# Whether int8 weights are quantised per output channel (True) or per tensor. Measured on the
# tiny trained BERT of tests/tiny_task.py (dev set): per channel, the int8 logits were 3.6e-3
# at most from fp32's, per tensor 4.6e-3 (both 100% agreement), for a 2% larger file.
PER_CHANNEL = True


def input_names(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The graph's inputs: input_ids, attention_mask, and token_type_ids only where the
    tokenizer produces them and the model embeds them."""
    names = list(BASE_INPUTS)
    produced = tokenizer("a", "b")
    takes = "token_type_ids" in inspect.signature(model.forward).parameters
    if "token_type_ids" in produced and takes and getattr(model.config, "type_vocab_size", 0):
        names.append("token_type_ids")
    return names


class _Logits(torch.nn.Module):
    """The classifier as a function of positional tensors (in `names` order) -> logits."""

    def __init__(self, model: PreTrainedModel, names: Sequence[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors, strict=True))).logits


def export_onnx(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                path: str | Path, names: Sequence[str]) -> Path:
    """Write the fp32 graph of `model` (on the CPU, in eval mode) to `path`. An export that
    torch.onnx refuses is one line naming the family and, where it says, the operator."""
    model = model.float().cpu().eval()
    sample = tokenizer(["a first sentence to trace", "a second"], ["and its pair", "b"],
                       padding=True, truncation=True, max_length=token_limit(tokenizer),
                       return_tensors="pt")
    args = tuple(sample[name] for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    wrapper = _Logits(model, names).eval()  # export restores the wrapper's (train) mode
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, args, str(path), input_names=list(names),
                              output_names=[OUTPUT], opset_version=OPSET, dynamo=False,
                              dynamic_axes={**axes, OUTPUT: {0: "batch"}})
    except Exception as error:  # torch.onnx raises many types; each becomes one line
        raise LayergraftError(export_failure(model.config.model_type, error)) from None
    finally:
        model.eval()
    return Path(path)


def export_failure(model_type: str, error: BaseException) -> str:
    """One line for an export torch.onnx refused: the family and the operator it names."""
    text = str(error).strip()
    operator = re.search(r"operator '?([\w:.]+)'?", text)
    what = f"operator {operator.group(1)}" if operator else (
        text.splitlines()[0][:200] if text else type(error).__name__)
    return (f"cannot export a '{model_type}' model to ONNX (opset {OPSET}): torch.onnx "
            f"failed on {what}")


def quantize_int8(source: str | Path, target: str | Path,
                  per_channel: bool | None = None) -> Path:
    """The dynamic int8 version of an fp32 graph: QInt8 weights of MatMul/Gemm (and the
    embeddings' Gather), activations quantised at run time; `per_channel` defaults to
    PER_CHANNEL."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    per_channel = PER_CHANNEL if per_channel is None else per_channel
    # DefaultTensorType: the outputs of a fused graph's contrib ops (Attention,
    # SkipLayerNormalization) have no inferred type; they are float
    with ort_tool(f"int8 quantisation of {Path(source).name}"):
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         per_channel=per_channel,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return Path(target)


@contextlib.contextmanager
def ort_tool(what: str) -> Iterator[None]:
    """Run one of ONNX Runtime's Python tools (quantisation, the transformer optimizer): its
    log advice kept quiet (the root logger at errors only), its failure one line naming
    `what`."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    except LayergraftError:
        raise
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise LayergraftError(f"{what} failed: {type(error).__name__} {first}"[:300]) from None
    finally:
        root.setLevel(level)


def session(path: str | Path, threads: int | None = None):
    """A CPU ONNX Runtime session over a saved graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no notes on initializers it drops
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(ort_session, batch: dict) -> np.ndarray:
    """Logits of one batch (tensors or arrays); only the inputs the graph takes are fed."""
    names = [i.name for i in ort_session.get_inputs()]
    feed = {name: np.asarray(batch[name], dtype=np.int64) for name in names}
    return ort_session.run([OUTPUT], feed)[0]
