"""`python -m layergraft.cli`: the same as the `layergraft` command."""

from layergraft.cli.app import main

main()
