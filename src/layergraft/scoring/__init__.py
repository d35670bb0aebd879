"""Scoring: how much each head and FFN neuron matters, and how similar the layers are.

- `importance`: head / neuron scores through mask hooks (michel, fisher, activation, weight)
- `similarity`: streaming linear CKA and adjacent-layer cosine
- `analysis`: one pass that records both (`measure` on a task sample, `AnalysisSettings`),
  saved as safetensors + JSON and read back exactly
- `plots`: pictures of an analysis, drawn from the recorded tensors

May import `layergraft.surgery.arch` (where the units live) and `layergraft.data` (the sample
to score on); knows nothing of training or the pipeline. Scorers neither print nor write.
"""
