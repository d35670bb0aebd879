"""Runs suites/mpnet_levers.py (its --help lists the options)."""

from suites.mpnet_levers import main

if __name__ == "__main__":
    main()
