"""Training: fitting a model to a task, whatever it is (a teacher or a compressed student).

- `train`: the transformers Trainer glue (`TrainConfig`, `train`, a student's defaults)
- `distill`: the distillation loss and a teacher whose outputs are cached once
- `lm_distill`: the same for causal LMs: top-k next-token KL and a top-k teacher cache
- `heal`: local healing, each new layer trained on its span's cached teacher states
- `calibrate`: span errors of candidate layers, the judge of `--choose-by reconstruction`
- `replace`: module replacement (BERT-of-Theseus) of teacher spans by their new layers
- `budget`: the training budget every method and strategy shares, in optimizer steps
- `parallel`: which device and data-parallel processes training runs on

May import `layergraft.data` and `layergraft.surgery` (a student's manifest says which
teacher layer each student layer imitates); knows nothing of grafting methods, scoring,
reports or the pipeline.
"""
