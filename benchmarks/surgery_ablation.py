"""Entry point: `python benchmarks/surgery_ablation.py` runs suites/surgery_ablation.py (`--help` for its options)."""

from suites.surgery_ablation import main

if __name__ == "__main__":
    main()
