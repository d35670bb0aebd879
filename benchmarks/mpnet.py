"""Entry point: `python benchmarks/mpnet.py` runs suites/mpnet.py (`--help` for its options)."""

from suites.mpnet import main

if __name__ == "__main__":
    main()
