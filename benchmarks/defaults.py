"""Runs suites/defaults.py (its --help lists the options)."""

from suites.defaults import main

if __name__ == "__main__":
    main()
