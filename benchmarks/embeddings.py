"""Entry point: `python benchmarks/embeddings.py` runs suites/embeddings.py (`--help` for its options)."""

from suites.embeddings import main

if __name__ == "__main__":
    main()
