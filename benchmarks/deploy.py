"""Entry point: `python benchmarks/deploy.py` runs suites/deploy.py (`--help` for its options)."""

from suites.deploy import main

if __name__ == "__main__":
    main()
