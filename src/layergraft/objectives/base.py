"""What a model is for, as a plug (DESIGN section 13): the `Objective` interface, the
`Session` of one run, the run's one `execute`, and the registry of objectives.

An objective decides how its models load and save (a stock folder its ecosystem's own loader
opens), which teacher outputs are cached, the importance loss, the distillation loss and the
healing targets, the evaluation (metrics, fidelity to the teacher, retention) and the unit
of speed. Everything else is the same for all and written once: the request checks
(`strategies`), the run folder's resume rules and settings digest (`runs`), the order of a
run (`Run.execute`: build, evaluate, time, save, results, card), and, above this package,
the one `compress`, `compare`, `evaluate` and report loop of `layergraft.pipeline`, which
reach an objective by name through `get_objective` only.

A new objective is one subpackage with an `Objective` subclass, one entry in `OBJECTIVES`
and nothing else: tests/test_objectives.py runs the same contract over every entry.
"""

from __future__ import annotations

import json
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from layergraft.errors import LayergraftError
from layergraft.objectives.runs import RESULTS_NAME, WORK_FOLDERS
from layergraft.utils import versions, write_json_atomic


class Objective(ABC):
    """One kind of model: a classifier (`task`), a sentence encoder (`embedding`), ..."""

    name: ClassVar[str]
    speed_unit: ClassVar[str]  # what the speed check counts per second
    graft_grid: ClassVar[tuple[str, ...]]  # the strategies `compare` runs for graft unless told
    writes_card: ClassVar[bool] = True  # False where the ecosystem's save writes its own
    default_budget: ClassVar[str] = "3 epochs"  # a run's training budget unless given
    comparison_title: ClassVar[str] = "layergraft comparison"
    speed_none_when_off: ClassVar[bool] = True  # False: no "speed" key at all when not timed
    times_shapes: ClassVar[bool] = False  # compare re-times each student shape once
    # what `--method auto` probes, each at its own rate; the CLI's --method unless given
    auto_methods: ClassVar[tuple[str, ...]] = ("graft", "drop-top")
    default_method: ClassVar[str] = "graft"

    @abstractmethod
    def run(self, teacher: str, data, *, layers: int, out: Path, dry_run: bool = False,
            **options) -> Run:
        """The run `compress` asks for, checked and identified (its `settings`), loading
        nothing; a request the objective cannot serve is refused in one line."""

    @abstractmethod
    def load(self, path: str, device: str = "cpu"):
        """A saved model as the ecosystem's own loader opens it (eval mode)."""

    @abstractmethod
    def evaluate(self, model: str, data=None, **options) -> list[dict]:
        """`layergraft evaluate`: records of a saved model (against its teacher, where the
        objective measures fidelity)."""

    @abstractmethod
    def rows(self, record: Mapping, key) -> list[dict]:
        """A finished run's record (`key`: its cell of the grid) as result rows."""

    def teacher_rows(self, record: Mapping) -> list[dict]:
        """Rows that show the teacher beside its students (from any student's record)."""
        return []

    @abstractmethod
    def write_rows(self, rows: Sequence[Mapping], out: Path, title: str) -> None:
        """The rows so far, written after every run of a grid."""

    @abstractmethod
    def write_report(self, rows: Sequence[Mapping], out: Path, title: str,
                     record: Mapping | None) -> None:
        """The grid's report, once every run is done (`record`: the last run's)."""

    @abstractmethod
    def probe_score(self, record: Mapping) -> float | None:
        """What `--lr auto` / `--plan auto` rank a short probe run by (higher is better)."""

    @abstractmethod
    def depth(self, teacher: str) -> int:
        """How many layers the teacher has (before any work)."""

    @abstractmethod
    def headline(self, record: Mapping) -> str:
        """One line that sums up a finished run."""


class Session(ABC):
    """One run's loaded teacher and data: the objective-specific steps of `Run.execute`."""

    importance_loss: str  # the loss whose gradients score heads and neurons

    @property
    def is_main(self) -> bool:
        return True

    def wait(self) -> None:  # noqa: B027 (one process: nothing to wait for)
        """Wait for every process of the run."""

    @abstractmethod
    def teacher_outputs(self, data):
        """The teacher's outputs on `data`, computed once and kept in the cache."""

    @abstractmethod
    def distill_loss(self, student, manifest):
        """The loss that trains the student to reproduce the teacher."""

    @abstractmethod
    def heal(self, student, manifest) -> dict:
        """Heal the student's new layers on the teacher's states at their spans' ends (the
        healing targets); heal.py's record plus its `charge` in distillation steps."""

    @abstractmethod
    def build(self) -> tuple[object, object, dict]:
        """(student, manifest, record so far): surgery, healing and the strategy's training."""

    @abstractmethod
    def evaluate(self, student) -> dict:
        """The student's evaluation: metrics, fidelity to the teacher, retention (called in
        every process; the main one's record counts)."""

    @abstractmethod
    def speed(self, student, measure_speed: Callable) -> dict:
        """Teacher and student timed in the same run, in the objective's `speed_unit`."""

    @abstractmethod
    def save(self, student, manifest) -> None:
        """The student as a stock folder of its ecosystem, with its graft manifest."""


class Run(ABC):
    """One compress run: `settings` identify it (compared by `runs`), `load` refuses bad
    data or weights before anything is written, `execute` is the same for every objective."""

    out: Path
    speed: bool
    objective: Objective

    @abstractmethod
    def settings(self) -> dict:
        """What identifies the run: a finished run with equal settings is not redone."""

    def processes(self):
        """The processes the run works in (accelerate's `PartialState` where it trains in
        several); one by default."""
        return OneProcess()

    @abstractmethod
    def load(self, state) -> Session:
        """The teacher and the data, loaded and checked; nothing written yet."""

    @property
    @abstractmethod
    def runtime(self):
        """The resolved device and precision (`layergraft.runtime.Runtime`)."""

    def execute(self, session: Session, measure_speed: Callable) -> dict:
        """Build the student, evaluate and time it, save it with results.json and its card,
        then remove the work folders; the record as saved."""
        start = time.perf_counter()
        student, manifest, record = session.build()
        evaluation = session.evaluate(student)
        if session.is_main:
            record.update(evaluation)
            if self.speed or self.objective.speed_none_when_off:
                record["speed"] = session.speed(student, measure_speed) if self.speed else None
            record["runtime"] = self.runtime.record()
            record["seconds"] = round(time.perf_counter() - start, 2)
            record["versions"] = versions()
            session.save(student, manifest)
            write_json_atomic(self.out / RESULTS_NAME, record)
            if self.objective.writes_card:
                from layergraft.report.model_card import write_card

                write_card(self.out, manifest.to_dict(), record)
            for work in WORK_FOLDERS:
                shutil.rmtree(self.out / work, ignore_errors=True)
        session.wait()
        return json.loads((self.out / RESULTS_NAME).read_text())


class OneProcess:
    """The process state of a run in one process (the subset of accelerate's it uses)."""

    is_main_process = True
    num_processes = 1

    def wait_for_everyone(self) -> None:
        pass

    @contextmanager
    def local_main_process_first(self) -> Iterator[None]:
        yield


def _task() -> Objective:
    from layergraft.objectives.task import TaskObjective

    return TaskObjective()


def _embedding() -> Objective:
    from layergraft.objectives.embedding import EmbeddingObjective

    return EmbeddingObjective()


def _lm() -> Objective:
    from layergraft.objectives.lm import LMObjective

    return LMObjective()


# name -> the objective (built when first asked for, so `layergraft --help` stays fast)
OBJECTIVES: dict[str, Callable[[], Objective]] = {"task": _task, "embedding": _embedding,
                                                  "lm": _lm}
_BUILT: dict[str, Objective] = {}


def get_objective(name: str) -> Objective:
    """The registered objective `name`; an unknown name is refused with the known ones."""
    if name not in OBJECTIVES:
        raise LayergraftError(f"unknown objective '{name}': choose {' or '.join(OBJECTIVES)}")
    if name not in _BUILT:
        _BUILT[name] = OBJECTIVES[name]()
    return _BUILT[name]
