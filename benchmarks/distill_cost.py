"""Runs suites/distill_cost.py (its --help lists the options)."""

from suites.distill_cost import main

if __name__ == "__main__":
    main()
