"""Runs suites/distill_weights.py (its --help lists the options)."""

from suites.distill_weights import main

if __name__ == "__main__":
    main()
