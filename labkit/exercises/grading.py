"""Grading submissions: run each student's notebook and collect every exercise's outcome.

An instructor collects the lesson notebooks a class handed in and runs
``labkit grade *.ipynb`` (:mod:`labkit.cli.grading`), or :func:`grade` from
Python. Each notebook runs top to bottom in a fresh kernel of the Python
running the grader (so the kit it imports is this one), in the notebook's
own folder, with a time limit per cell; a cell that fails does not stop the
run. Every exercise of the notebook's lesson then gets one outcome:

=================  ==========================================================================
outcome            when
=================  ==========================================================================
``right``          ``check(id, answer)`` found the answer right
``not yet``        the check refused the answer; the detail is the check's problem
``not attempted``  the answer is still ``...``
``error``          the exercise's cell raised something other than the check's refusal (a
                   ``NameError`` before ``check`` ran, a student's function failing inside the
                   check), ran out of time, or never ran because the kernel died first
``missing``        no cell of the notebook calls ``check`` for it (the cell was deleted)
=================  ==========================================================================

Outcomes are not scraped from printed text: the grader names a fresh file in
the kernel's environment variable ``LABKIT_GRADE_LOG``
(:data:`labkit.exercises.GRADE_LOG`), and :func:`~labkit.exercises.check`
appends one JSON line to it for each call. The last line for an exercise
wins, as the last run of a cell would on screen. Only when an exercise has
no line does the grader look at its cell's execute reply (the kernel's own
``ename``/``evalue``), to tell ``error`` from ``missing``.

An exercise cell is any code cell that calls ``check("NN.k", ...)`` with the
id written as a string; the notebooks mark them no other way. The lesson
of a notebook is the ``NN`` of its file name (``03_securing_webhooks.ipynb``)
when it starts with one, else the lesson its exercise cells name (a
submission renamed ``alice.ipynb``), else the one the caller gives.

``solutions=True`` replaces each exercise cell, in memory only, with a cell
that checks the reference answer from ``solutions/lessonNN.py``
(:func:`reference_answer`): a fully solved notebook must grade as all
``right``, which proves the grader and the references agree.

Example::

    from labkit.exercises.grading import grade
    for graded in grade(["alice.ipynb", "bob.ipynb"], timeout=60):
        print(graded.notebook, graded.counts())   # {'right': 3, 'not yet': 1, ...}

Running a submission runs its code with the grader's rights, like opening it
in Jupyter would: grade in an account or container that holds nothing else.
A student who reads this docstring can also write lines to the log; the
grades are feedback for a class, not proof against a determined forger.

Thread-safety: :func:`grade` runs its kernels on an event loop in a thread of
its own, and ``each`` is called on that thread, so any thread may call it.
The calling thread only waits, so Ctrl-C (``KeyboardInterrupt``) reaches it
at once, however long a cell runs: :func:`grade` then cancels the run, waits
at most ``STOP_SECONDS`` for the kernels to be shut down, and raises it on;
a kernel still running sees its parent leave and ends itself.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import importlib.util
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import zmq
from ipykernel.kernelspec import get_kernel_dict
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

import labkit
from labkit.errors import UsageError
from labkit.exercises import GRADE_LOG, registered

__all__ = ["OUTCOMES", "Outcome", "Graded", "grade", "exercise_cells", "lesson_of",
           "with_solutions", "reference_answer", "SOLUTIONS"]

OUTCOMES = ("right", "not yet", "not attempted", "error", "missing")
"""Every outcome an exercise can have, in the order tables list them."""

STOP_SECONDS = 15.0
"""How long Ctrl-C waits for the running kernels to be shut down before it goes on."""

SOLUTIONS = Path(labkit.__file__).resolve().parent.parent / "solutions"
"""The reference answers of a checkout of the kit (installed with ``pip install -e .``)."""

_CHECK_CALL = re.compile(r"""\bcheck\(\s*(["'])(\d{2}\.\d+)\1""")
_LESSON_PREFIX = re.compile(r"^(\d{2})_")


@dataclass(frozen=True)
class Outcome:
    """One exercise's outcome (one of :data:`OUTCOMES`) and what explains it."""

    exercise: str
    outcome: str
    detail: str = ""


@dataclass(frozen=True)
class Graded:
    """One notebook graded: the outcome of every exercise of its lesson, in order.

    ``failure`` is empty when the notebook ran to its end (whatever the
    answers), else why it did not: it could not be read, its lesson could
    not be told, its kernel died. ``seconds``: how long the run took.
    """

    notebook: Path
    lesson: str | None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    failure: str = ""
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """How many exercises had each outcome (every outcome listed, zeros included)."""
        counted = Counter(item.outcome for item in self.outcomes.values())
        return {outcome: counted[outcome] for outcome in OUTCOMES}


def exercise_cells(notebook: Any) -> dict[int, str]:
    """The exercise cells of a notebook (an ``nbformat`` node): cell index -> exercise id.

    A cell that checks two exercises counts for the first it names.
    """
    cells = {}
    for index, cell in enumerate(notebook.cells):
        found = _CHECK_CALL.search(cell.source) if cell.cell_type == "code" else None
        if found:
            cells[index] = found.group(2)
    return cells


def lesson_of(notebook: Any, path: Path) -> str | None:
    """The lesson (``"03"``) a notebook belongs to, or None when neither its name nor its
    exercise cells say (see the module's docstring for the rule)."""
    lessons = {exercise_id.split(".")[0] for exercise_id in registered()}
    named = _LESSON_PREFIX.match(path.name)
    if named and named.group(1) in lessons:
        return named.group(1)
    found = Counter(exercise_id.split(".")[0] for exercise_id in exercise_cells(notebook).values())
    known = [lesson for lesson, _ in found.most_common() if lesson in lessons]
    return known[0] if known else None


def reference_answer(exercise_id: str, solutions: str | Path = SOLUTIONS) -> Any:
    """The reference answer to ``exercise_id`` from ``solutions/lessonNN.py``'s ``ANSWERS``."""
    lesson = exercise_id.split(".")[0]
    path = Path(solutions) / f"lesson{lesson}.py"
    if not path.is_file():
        raise UsageError(f"no reference answers for lesson {lesson}: {str(path)!r} does not "
                         f"exist (they ship with a checkout of the kit, not with its package)")
    spec = importlib.util.spec_from_file_location(f"solutions_lesson{lesson}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if exercise_id not in module.ANSWERS:
        raise UsageError(f"{str(path)!r} has no reference answer for {exercise_id}")
    return module.ANSWERS[exercise_id]


def with_solutions(notebook: Any, solutions: str | Path = SOLUTIONS) -> Any:
    """A copy of ``notebook`` whose exercise cells check the reference answers instead."""
    solved = copy.deepcopy(notebook)
    for index, exercise_id in exercise_cells(solved).items():
        solved.cells[index].source = (
            f"# filled in by labkit grade --solutions\n"
            f"from labkit.exercises import check\n"
            f"from labkit.exercises.grading import reference_answer\n"
            f"check({exercise_id!r}, reference_answer({exercise_id!r}, {str(solutions)!r}))")
    return solved


def grade(notebooks: Iterable[str | Path], *, timeout: float = 60, jobs: int = 1,
          solutions: bool = False, lesson: str | None = None,
          each: Callable[[Graded], Any] | None = None) -> list[Graded]:
    """Run and grade each notebook; return one :class:`Graded` per notebook, in order.

    ``timeout``: seconds each cell may run. ``jobs``: notebooks run at once,
    each in its own kernel. ``solutions``: grade the reference answers
    instead of the cells' own. ``lesson``: the lesson of notebooks whose name
    and cells do not say. ``each`` is called with every result, in order,
    as soon as it and those before it are done (to print as it goes).
    A notebook that cannot run is a result with a ``failure``, not an error:
    one broken submission does not stop a class's grading.
    """
    paths = [Path(notebook) for notebook in notebooks]
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{str(path)!r} is not a file: give notebooks (.ipynb) to grade")
    if not paths:
        raise UsageError("give at least one notebook to grade")
    if timeout <= 0 or jobs < 1:
        raise UsageError("timeout must be > 0 seconds and jobs at least 1")
    if lesson is not None and lesson not in {i.split(".")[0] for i in registered()}:
        raise UsageError(f"lesson {lesson!r} has no exercises: lessons look like 03")
    if solutions and not SOLUTIONS.is_dir():
        raise UsageError(f"--solutions needs the reference answers in {str(SOLUTIONS)!r}: "
                         f"grade from a checkout of the kit installed with pip install -e .")
    outcome: dict[str, Any] = {}
    running: dict[str, Any] = {}

    async def main() -> list[Graded]:
        running["loop"], running["task"] = asyncio.get_running_loop(), asyncio.current_task()
        return await _grade_all(paths, timeout, jobs, solutions, lesson, each)

    def run() -> None:  # on its own thread, where nbclient does not take over SIGINT
        try:
            outcome["results"] = asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="labkit-grade", daemon=True)
    worker.start()
    try:
        worker.join()
    except KeyboardInterrupt:
        # Cancel the grading: nbclient shuts each running kernel down and the loop closes
        # its sockets; then the interrupt goes on to the caller (bounded: a kernel that
        # will not stop still sees its parent leave and ends itself).
        if "task" in running:
            running["loop"].call_soon_threadsafe(running["task"].cancel)
        worker.join(STOP_SECONDS)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["results"]


async def _grade_all(paths: list[Path], timeout: float, jobs: int, solutions: bool,
                     lesson: str | None, each: Callable[[Graded], Any] | None) -> list[Graded]:
    running = asyncio.Semaphore(jobs)

    async def one(path: Path) -> Graded:
        async with running:
            return await _grade_one(path, timeout, solutions, lesson)

    tasks = [asyncio.ensure_future(one(path)) for path in paths]
    results = []
    try:
        for task in tasks:
            results.append(await task)
            if each is not None:
                each(results[-1])
    finally:
        for task in tasks:
            task.cancel()
    return results


async def _grade_one(path: Path, timeout: float, solutions: bool,
                     lesson: str | None) -> Graded:
    import nbformat  # here and in _execute: slow to import, and --help needs none of them
    started = time.monotonic()
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one failed submission
        return Graded(path, None, failure=f"not a notebook: {type(exc).__name__}: {exc}")
    lesson = lesson_of(notebook, path) or lesson
    if lesson is None:
        return Graded(path, None, failure="cannot tell its lesson: its name does not start "
                                          "with one (03_...) and no cell calls check('NN.k', "
                                          "...); give --lesson")
    if solutions:
        notebook = with_solutions(notebook)
    cells = exercise_cells(notebook)
    with tempfile.TemporaryDirectory(prefix="labkit-grade-") as folder:
        log = Path(folder) / "outcomes.jsonl"
        log.touch()
        replies, failure = await _execute(notebook, path.parent, timeout, log)
        records = _records(log)
    exercises = [i for i in registered() if i.split(".")[0] == lesson]
    outcomes = {i: _outcome(i, records, cells, replies, failure) for i in exercises}
    return Graded(path, lesson, outcomes, failure, time.monotonic() - started)


def _records(log: Path) -> list[dict]:
    """The lines ``check`` appended, in order; a line it could not have written (the
    submission wrote to the file itself) is left out rather than trusted or fatal."""
    records = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (isinstance(record, dict) and isinstance(record.get("exercise"), str)
                and record.get("outcome") in OUTCOMES[:-1]
                and isinstance(record.get("detail", ""), str)):
            records.append(record)
    return records


def _outcome(exercise_id: str, records: list[dict], cells: dict[int, str],
             replies: dict[int, dict], failure: str) -> Outcome:
    """One exercise's outcome: its last check record, else what its cell did."""
    mine = [record for record in records if record.get("exercise") == exercise_id]
    if mine:
        last = mine[-1]
        return Outcome(exercise_id, last["outcome"], last.get("detail", ""))
    where = [index for index, named in cells.items() if named == exercise_id]
    if not where:
        return Outcome(exercise_id, "missing", f'no cell calls check("{exercise_id}", ...)')
    reply = replies.get(where[-1])
    if reply is None:
        return Outcome(exercise_id, "error", "its cell never ran: the run stopped before it")
    if reply.get("status") == "error":
        return Outcome(exercise_id, "error", f"{reply.get('ename')}: {reply.get('evalue')}")
    return Outcome(exercise_id, "missing", "its cell ran but never called check")


async def _execute(notebook: Any, folder: Path, timeout: float,
                   log: Path) -> tuple[dict[int, dict], str]:
    """Run every cell in a fresh kernel; each code cell's execute reply content, and why the
    run stopped early ('' when it did not)."""
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    replies: dict[int, dict] = {}

    def executed(cell: Any, cell_index: int, execute_reply: dict) -> None:
        replies[cell_index] = execute_reply["content"]

    seconds = max(1, round(timeout))
    client = NotebookClient(
        notebook, timeout=seconds, allow_errors=True, interrupt_on_timeout=True,
        error_on_timeout={"ename": "CellTimeout", "evalue": f"the cell ran longer than "
                                                            f"{seconds} s", "traceback": []},
        # CurveZMQ between grader and kernel where pyzmq has it: a shared hub's other users
        # cannot read a submission's traffic on loopback (and the kernel does not warn).
        km=AsyncKernelManager(kernel_spec_manager=_ThisPython(),
                              transport_encryption="auto" if zmq.has("curve") else "disabled"),
        on_cell_executed=executed,
        resources={"metadata": {"path": str(folder)}})
    try:
        # cleanup_kc: shut the kernel down at the end (nbclient leaves a kernel it was
        # given running); gracefully, so its own exit handlers stop what it started.
        # The kernel's own stdout and stderr (its start-up and shutdown notes, not the cells'
        # output, which comes over the kernel protocol) would only clutter the tables.
        await client.async_execute(cleanup_kc=True, env={**os.environ, GRADE_LOG: str(log)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except DeadKernelError:
        return replies, "the kernel died (a cell ended its process, or it ran out of memory)"
    except Exception as exc:  # noqa: BLE001 - a kernel that would not start fails one run
        message = " ".join(str(exc).split())
        return replies, f"the kernel could not run it: {type(exc).__name__}: {message}"
    finally:
        # nbclient registers an exit hook that shuts the kernel down from the main thread
        # with a loop of its own; a run cancelled by Ctrl-C can leave it registered, and at
        # exit it would then fight this loop's kernel manager. The kernel is shut down here
        # (nbclient's cleanup), or sees its parent leave and ends itself.
        atexit.unregister(client._cleanup_kernel)
    return replies, ""


class _ThisPython(KernelSpecManager):
    """Every kernel name means the Python running the grader, whatever kernels are installed."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(resource_dir="", **get_kernel_dict())
