"""Entry point: `python benchmarks/distill_cost.py` runs suites/distill_cost.py (`--help` for its options)."""

from suites.distill_cost import main

if __name__ == "__main__":
    main()
