"""Runs suites/lever_ablation.py (its --help lists the options)."""

from suites.lever_ablation import main

if __name__ == "__main__":
    main()
