"""Sentence-embedding models: graft a sentence-transformers model and keep its embeddings.

- `model`: recognising a sentence-transformers folder (Transformer, Pooling, optional Dense,
  Normalize), its pooled embedding as a function of the transformer's output, and grafting
  its transformer into a student folder that `SentenceTransformer(path)` loads
- `texts`: unlabeled training text from a file (lines, or a CSV/TSV/JSONL column) or a task
- `objective`: the embedding loss, the teacher's embeddings cached once, and training the
  student with sentence-transformers' own trainer
- `evaluate`: fidelity to the teacher (mean cosine, top-10 neighbour agreement) and
  frozen-embedding probes; `fidelity`: the record of both; `heal`: local healing; `speed`:
  sentences per second; `report`: records as rows, tables, headlines

The run itself is `layergraft.objectives.embedding`, which uses these pieces. May import
`layergraft.surgery`, `layergraft.scoring`, `layergraft.training`, `layergraft.data`,
`layergraft.report` and below. sentence-transformers is imported inside functions, so
`layergraft --help` stays fast.
"""
