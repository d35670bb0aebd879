"""The pipeline: the commands' work, from model folders and task names to saved results.

- `workflows`: path-level analyze and graft (load, run the pure piece, save)
- `finetune`: make a teacher
- `evaluation`, `runs`, `strategies`: the names callers import for
  `layergraft.objectives.task.evaluation`, `layergraft.objectives.runs` and `.strategies`
- `compress`: the one compress loop over every objective (`layergraft.objectives`): request,
  dry run, resume rules, then the run's one `execute`; `auto`: `--lr auto` / `--plan auto`
- `compare`: methods x strategies x depths (x seeds) of `compress`, then the objective's
  rows and report
- `bench`: throughput, latency and size of models measured in one run (`bench_run`: models
  x backends from folders, with ONNX exports; `bench_quality`: each pair scored on a task;
  `lm_speed`: a causal LM's prefill and decode tokens per second, teacher beside student)
- `demo`: the built-in offline demo

May import every other layer (objectives, data, surgery, scoring, training, report,
models, utils); the loop (compress, compare, auto) reaches a specific objective through
`layergraft.objectives.base.get_objective` only. Nothing below imports it. The public
functions in `layergraft` are thin layers over these.
"""
