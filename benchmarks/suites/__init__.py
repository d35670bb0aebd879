"""The benchmark suites, each run by the script of its name one folder up
(`python benchmarks/offline.py`): offline (MiniLM), mpnet and mpnet_levers (12 layers),
embeddings, deploy, the ablations (graft_ablation, lever_ablation, surgery_ablation,
distill_weights) and timings (timings, distill_cost).

A suite may import lib/, report/ and other suites, with no cycle
(tests/test_benchmarks_layout.py checks it).
"""
