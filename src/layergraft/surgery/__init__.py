"""Surgery: from a model and a plan (or a target depth) to a smaller model of standard shape.

- `arch`: architecture knowledge as data, one frozen spec per encoder (and decoder) family
- `decoder`: what differs for Llama-family decoders (KV groups, folded RMSNorms, layer types)
- `plan`: which adjacent layers become one (a validated, serialisable partition)
- `methods`: compression methods as recipe makers (graft, random, average, drop-*)
- `decoder_baselines`: the decoder LLM baselines (shortgpt, angular, sleb, laco, streamline)
- `width`: FFN width of the new layers (--ffn-size) and why encoder heads stay whole
- `recipes`: the surgery itself, recipes -> weights (a pure function, input untouched)
- `choose`: per-span graft options chosen by a caller's judge of span error (reconstruction)
- `graft`: `graft_model`, the public surgery call (method + recipes + manifest step)
- `manifest`: the replayable record of every step, saved beside the model
- `refit`: retraining-free least-squares repair of the new layers after surgery

Imports only `layergraft.errors` and `layergraft.utils`: surgery knows nothing of data,
scoring, training or the pipeline (scores and similarities come in as plain tensors).
"""
