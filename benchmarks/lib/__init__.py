"""The machinery the suites and the report share: the row store (jsonstore), settings digests
and kept predictions (recorded), the stage plans (stages, mpnet_plan, embeddings_plan), timing
(measure), paired tests (paired), the stage command line (stagecli) and the paths (paths).

Imports nothing from report/ or suites/ (tests/test_benchmarks_layout.py checks it).
"""
