"""Runs suites/offline.py (its --help lists the options)."""

from suites.offline import main

if __name__ == "__main__":
    main()
