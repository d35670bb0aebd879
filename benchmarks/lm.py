"""Runs suites/lm.py (its --help lists the options)."""

from suites.lm import main

if __name__ == "__main__":
    main()
