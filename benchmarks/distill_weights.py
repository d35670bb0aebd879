"""Entry point: `python benchmarks/distill_weights.py` runs suites/distill_weights.py (`--help` for its options)."""

from suites.distill_weights import main

if __name__ == "__main__":
    main()
