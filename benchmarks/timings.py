"""Entry point: `python benchmarks/timings.py` runs suites/timings.py (`--help` for its options)."""

from suites.timings import main

if __name__ == "__main__":
    main()
