"""What a model is for, as a plug: one `Objective` per kind of model (DESIGN section 13).

- `base`: the `Objective` and `Session` interfaces, the run's one `execute`, the registry
  (`OBJECTIVES`, `get_objective`)
- `runs`: a run folder's files and resume rules; `strategies`: which requests each strategy
  takes (both the same for every objective)
- `task`: a sequence classifier on a labelled task
- `embedding`: a sentence-transformers model on the teacher's embeddings of unlabeled text
- `lm`: a decoder LLM (Llama family) on the teacher's next-token distributions over text

May import every layer below `layergraft.pipeline` (embeddings, deploy, training, scoring,
models, report, data, surgery, ...). `layergraft.pipeline`'s one compress / compare /
evaluate loop reaches a specific objective through `get_objective` only.
"""
