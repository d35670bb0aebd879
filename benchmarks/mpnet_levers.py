"""Entry point: `python benchmarks/mpnet_levers.py` runs suites/mpnet_levers.py (`--help` for its options)."""

from suites.mpnet_levers import main

if __name__ == "__main__":
    main()
