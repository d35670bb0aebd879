"""Entry point: `python benchmarks/graft_ablation.py` runs suites/graft_ablation.py (`--help` for its options)."""

from suites.graft_ablation import main

if __name__ == "__main__":
    main()
