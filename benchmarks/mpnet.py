"""Runs suites/mpnet.py (its --help lists the options)."""

from suites.mpnet import main

if __name__ == "__main__":
    main()
