"""The pipeline: the commands' work, from model folders and task names to saved results.

- `workflows`: path-level analyze and graft (load, run the pure piece, save)
- `finetune`: make a teacher
- `evaluation`: score a model on a task split; agreement with a teacher
- `compress`: surgery + one strategy + evaluation + speed, resumable (`strategies`: which
  requests each strategy takes; `healing`: the healing stage; `runs`: a run's files and when
  it resumes; `assess`: the student against its teacher)
- `compare`: methods x strategies x depths (x seeds) of `compress`, then the report
- `bench`: throughput, latency and size of models measured in one run (`bench_run`: models
  x backends from folders, with ONNX exports; `bench_quality`: each pair scored on a task)
- `demo`: the built-in offline demo

May import every other layer (data, surgery, scoring, training, report, models, utils);
nothing below imports it. The public functions in `layergraft` are thin layers over these.
"""
