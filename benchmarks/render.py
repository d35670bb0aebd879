"""Entry point: `python benchmarks/render.py` renders BENCHMARKS.md (report/render.py)."""

from report.render import main

if __name__ == "__main__":
    main()
