"""What renders BENCHMARKS.md from the committed rows alone: render (the page), one module per
section (embedding_section, mpnet_section, deploy_section, levers), the target verdicts
(targets) and the hand-written misses.md.

Imports lib/ only, never suites/ (tests/test_benchmarks_layout.py checks it).
"""
