"""Runs suites/deploy.py (its --help lists the options)."""

from suites.deploy import main

if __name__ == "__main__":
    main()
