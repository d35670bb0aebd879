"""Runs suites/width.py (its --help lists the options)."""

from suites.width import main

if __name__ == "__main__":
    main()
