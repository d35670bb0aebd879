"""Deployment: a classifier exported to ONNX (fp32, dynamic and static int8, and graphs fused
by ONNX Runtime's transformer optimizer) and checked against PyTorch.

- `onnx`: the graph export (`torch.onnx.export`, TorchScript exporter, opset 17, dynamic batch
  and sequence axes), ONNX Runtime sessions and int8 dynamic quantisation
- `verify`: ONNX Runtime logits against PyTorch's, on a task's dev set or built-in sentences
- `variants`: the graphs of an export folder by one naming scheme ([opt-]fp32 / int8 /
  int8-static; bench backends onnx-[opt-]PRECISION), written and checked
- `optimize`: ONNX Runtime's transformer optimizer (attention, skip-LayerNorm and GELU
  fusions) and static (QDQ) int8 calibrated on task texts
- `export`: `export_model`, the whole step: a folder with model.onnx (and the graphs asked
  for), the tokenizer, config, graft manifest, export_report.json and a model card
- `gguf`: a decoder LLM as model.gguf for llama.cpp and ollama (`--format gguf`; f32, f16 or
  q8_0; llama, mistral, qwen2, qwen3), reloaded with transformers' GGUF loader and checked;
  `gguf_vocab`: its byte-level BPE tokenizer as `tokenizer.ggml.*` keys
- `backends`: the runners `bench` times a model with (torch fp32 / bf16 / int8, ONNX Runtime
  on every graph of `variants`), each running a batch dict

Why not Optimum: `optimum-onnx` 0.1.0 requires transformers<4.58 and layergraft needs
transformers 5.x, so it cannot be installed beside it (pip: ResolutionImpossible).

(Named `deploy`, not `export`, so that it does not shadow the public function
`layergraft.export` once imported.) May import data, surgery, models, report (the card), runtime,
utils and errors; the pipeline may import it, nothing else does.
"""
