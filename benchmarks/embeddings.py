"""Runs suites/embeddings.py (its --help lists the options)."""

from suites.embeddings import main

if __name__ == "__main__":
    main()
