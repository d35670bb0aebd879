"""Runs suites/graft_ablation.py (its --help lists the options)."""

from suites.graft_ablation import main

if __name__ == "__main__":
    main()
