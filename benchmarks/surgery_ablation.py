"""Runs suites/surgery_ablation.py (its --help lists the options)."""

from suites.surgery_ablation import main

if __name__ == "__main__":
    main()
