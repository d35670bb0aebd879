"""Entry point: `python benchmarks/lever_ablation.py` runs suites/lever_ablation.py (`--help` for its options)."""

from suites.lever_ablation import main

if __name__ == "__main__":
    main()
