"""Runs suites/timings.py (its --help lists the options)."""

from suites.timings import main

if __name__ == "__main__":
    main()
