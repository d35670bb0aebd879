"""Data: tasks declared as data, and what turns their text into model inputs and scores.

- `tasks`: one frozen `TaskSpec` per task (GLUE, the offline movie sets, variants), loading
  into the standard layout, `TaskSource` (a task as a command names it)
- `local`: a user's CSV / TSV / JSONL file or folder as a task
- `movies`: the offline Hutto & Gilbert sentiment corpora and their fixed split
- `encoding`: tokenised splits, dynamic padding, data loaders
- `metrics`: metric functions with metadata (`higher_is_better`)
- `lm_text`: text for language modelling (`--texts`, the built-in movie-text and held-out
  corpora), split by document, as one token stream cut into blocks and windows

Imports only `layergraft.errors` and `layergraft.utils`; never runs a model.
"""
