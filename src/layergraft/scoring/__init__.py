"""Scoring: how much each head and FFN neuron matters, and how similar the layers are.

- `importance`: head / neuron scores through mask hooks (michel, fisher, activation, weight)
- `similarity`: streaming linear CKA and adjacent-layer cosine
- `block_scores`: what the decoder baselines measure (boundary cosines, angular distance,
  candidate models' NLL and output similarity)
- `analysis`: one pass that records both (`measure` on a task sample, `AnalysisSettings`),
  saved as safetensors + JSON and read back exactly
- `plots`: pictures of an analysis, drawn from the recorded tensors
- `lm_quality`: perplexity over non-overlapping windows, KL and top-1 agreement to a teacher,
  greedy continuations; `lm_harness`: a local zero-shot task run through lm-eval

May import `layergraft.surgery.arch` (where the units live) and `layergraft.data` (the sample
to score on); knows nothing of training or the pipeline. Scorers neither print nor write.
"""
