"""Sentence-embedding models: graft a sentence-transformers model and keep its embeddings.

- `model`: recognising a sentence-transformers folder (Transformer, Pooling, optional Dense,
  Normalize), its pooled embedding as a function of the transformer's output, and grafting
  its transformer into a student folder that `SentenceTransformer(path)` loads
- `texts`: unlabeled training text from a file (lines, or a CSV/TSV/JSONL column) or a task
- `objective`: the embedding loss, the teacher's embeddings cached once, and training the
  student with sentence-transformers' own trainer
- `evaluate`: fidelity to the teacher (mean cosine, top-10 neighbour agreement) and a
  frozen-embedding probe on a task
- `compress`: `compress_embedding`, the resumable run behind `compress --objective embedding`

May import `layergraft.surgery`, `layergraft.scoring`, `layergraft.training` (the cache's
hashing and atomic writes), `layergraft.data` and `layergraft.pipeline.runs` (the run folder
rules it shares with classifier runs); `layergraft.api` calls it, nothing else below does.
sentence-transformers is imported inside functions, so `layergraft --help` stays fast.
"""
