"""Reports: result rows -> statistics, tables, figures and a Markdown / HTML report.

- `stats`: summaries over seeds, the final budget, Pareto fronts, paired tests
- `tables`: CSV files and the formatted cells of Markdown / HTML tables
- `figures`: retention vs depth and vs budget, metric vs speed-up
- `render`: `write_report`, the Markdown page with PNGs and a self-contained HTML page
- `model_card`: the README.md (Hub model card) of a model folder, from its manifest and results
- `export_card`: the same for an export folder, from export_report.json
- `bench_report`: bench.json / .csv / .md and the Pareto plot; the best backend per model

Nothing here trains, evaluates or times a model: every number comes from the rows it is
given, so a report can be regenerated from saved results at any time. Imports only
`layergraft.data.metrics` (metric metadata) and `layergraft.utils`.
"""
