"""The strategies of `compress`: `layergraft.objectives.strategies`, under the name the
benchmarks and older callers import."""

from layergraft.objectives.strategies import (  # noqa: F401
    GRAFT_GRID,
    ONE,
    PER_STAGE,
    PROGRESSIVE_SCHEDULES,
    STRATEGIES,
    UNTRAINED,
    check_request,
    normalized_spans,
    steps_after_heal,
)
