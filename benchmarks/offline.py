"""Entry point: `python benchmarks/offline.py` runs suites/offline.py (`--help` for its options)."""

from suites.offline import main

if __name__ == "__main__":
    main()
