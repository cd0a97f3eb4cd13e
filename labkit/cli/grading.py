"""``labkit grade SUBMISSION.ipynb ...``: run students' notebooks and tabulate their exercises.

Each notebook runs top to bottom in a fresh kernel of this Python, in its own
folder, each cell within ``--timeout`` seconds, past any cell that fails
(:mod:`labkit.exercises.grading`); every exercise of its lesson then gets one
outcome: ``right``, ``not yet`` (with the check's problem), ``not
attempted``, ``error`` (its cell raised something else, ran out of time or
never ran) or ``missing`` (no cell checks it). The command prints a table per
notebook as it finishes, then a summary per exercise::

    alice.ipynb: lesson 03, 1 of 4 right, ran in 7.2 s
      exercise  outcome        detail
      03.1      right
      03.2      not yet        the answer is the raw body as bytes (b'...'), not str
      03.3      missing        no cell calls check("03.3", ...)
      03.4      error          NameError: name 'adress' is not defined

========================  ====================================================================
option                    what it does
========================  ====================================================================
``--csv grades.csv``      a gradebook: one row per notebook (``notebook``, ``lesson``, one
                          column per exercise holding its outcome, ``right``, ``run``:
                          ``ok`` or why the run failed)
``--solutions``           fill every exercise cell with the reference answer from
                          ``solutions/`` (in memory; the file is not changed): a lesson graded
                          this way must be all ``right``
``--timeout 60``          seconds each cell may run before it is interrupted (an ``error``)
``--jobs 4``              notebooks run at once, one kernel each (mind the memory per kernel)
``--lesson 03``           the lesson of submissions whose file name and cells do not say
========================  ====================================================================

Exit status: 0 when every notebook ran to its end, whatever its answers; 1
when one could not be read or run (its kernel died, its lesson could not be
told): the others are still graded and tabulated, and stderr says which; 2
for a bad argument (a file that does not exist or is not ``.ipynb``).

Thread-safety: runs in the main thread; kernels run on an event loop of the
grading call's own.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from labkit.cli import arguments

if TYPE_CHECKING:  # the grader brings jupyter_client and zmq: loaded only to grade
    from labkit.exercises.grading import Graded

__all__ = ["add_commands", "format_notebook", "format_summary", "write_csv"]

DETAIL_WIDTH = 72
"""Characters of a check's problem shown in a table (the notebook shows all of it)."""

_EXAMPLES = """examples:
  labkit grade submissions/*.ipynb --csv grades.csv
  labkit grade --solutions notebooks/03_securing_webhooks.ipynb
  labkit grade alice.ipynb --lesson 03 --timeout 120"""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``grade`` to the top-level parser's commands."""
    grade_command = commands.add_parser(
        "grade", epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run submitted notebooks and tabulate each exercise's outcome",
        description=textwrap.fill(
            "Run each notebook top to bottom in a fresh kernel and say, for every exercise "
            "of its lesson, whether check() found it right, not yet right, not attempted, "
            "an error, or missing."))
    grade_command.add_argument("notebooks", nargs="+", type=_notebook,
                               metavar="SUBMISSION.ipynb", help="the notebooks to grade")
    grade_command.add_argument("--csv", type=arguments.output(".csv"), metavar="FILE",
                               help="write a gradebook: one row per notebook, one column per "
                                    "exercise")
    grade_command.add_argument("--solutions", action="store_true",
                               help="answer every exercise with its reference answer from "
                                    "solutions/ (proves a solved lesson grades as right)")
    grade_command.add_argument("--timeout", type=arguments.seconds(3600), default=60.0,
                               metavar="SECONDS", help="longest a cell may run (default: 60)")
    grade_command.add_argument("--jobs", type=arguments.whole(1, 64), default=1, metavar="N",
                               help="notebooks run at once, one kernel each (default: 1)")
    grade_command.add_argument("--lesson", type=_lesson, metavar="NN",
                               help="the lesson of notebooks whose name and cells do not say")
    grade_command.set_defaults(handler=_grade)


def _notebook(text: str) -> Path:
    path = Path(text).expanduser()
    if path.suffix != ".ipynb":
        raise arguments.Invalid(f"{text!r} is not a notebook: give .ipynb files")
    if not path.is_file():
        raise arguments.Invalid(f"{text!r} does not exist")
    return path


def _lesson(text: str) -> str:
    if len(text) != 2 or not text.isdigit():
        raise arguments.Invalid(f"{text!r} is not a lesson number such as 03")
    return text


def _grade(args: argparse.Namespace) -> int:
    from labkit.exercises.grading import grade

    def show(graded: Graded) -> None:
        print(format_notebook(graded), end="\n\n", flush=True)

    try:
        results = grade(args.notebooks, timeout=args.timeout, jobs=args.jobs,
                        solutions=args.solutions, lesson=args.lesson, each=show)
    except KeyboardInterrupt:
        # End here, without the interpreter's exit hooks: jupyter_client's and nbclient's
        # would shut the kernels down from this thread while the grading loop's thread
        # still holds them (a zmq assertion or a hang). Each kernel sees its parent leave
        # and ends itself.
        print("labkit grade: interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)
    print(format_summary(results))
    if args.csv is not None:
        try:
            write_csv(results, args.csv)
        except OSError as exc:
            print(f"labkit grade: failed: cannot write {str(args.csv)!r}: {exc.strerror}",
                  file=sys.stderr)
            return 1
    failed = [graded for graded in results if graded.failure]
    for graded in failed:
        print(f"labkit grade: failed: {graded.notebook}: {graded.failure}", file=sys.stderr)
    return 1 if failed else 0


def format_notebook(graded: Graded) -> str:
    """One notebook's table: a heading line, then a row per exercise."""
    if graded.lesson is None:
        return f"{graded.notebook}: not graded: {graded.failure}"
    right = graded.counts()["right"]
    heading = (f"{graded.notebook}: lesson {graded.lesson}, {right} of {len(graded.outcomes)} "
               f"right, ran in {graded.seconds:.1f} s")
    if graded.failure:
        heading += f" (stopped early: {graded.failure})"
    rows = [["exercise", "outcome", "detail"]]
    rows += [[item.exercise, item.outcome,
              textwrap.shorten(item.detail, DETAIL_WIDTH, placeholder=" ...")]
             for item in graded.outcomes.values()]
    return "\n".join([heading] + ["  " + line for line in _aligned(rows)])


def format_summary(results: list[Graded]) -> str:
    """How many notebooks had each outcome, per exercise."""
    ran = [graded for graded in results if graded.lesson is not None]
    exercises = sorted({exercise for graded in ran for exercise in graded.outcomes})
    from labkit.exercises.grading import OUTCOMES
    rows = [["exercise", *OUTCOMES]]
    for exercise in exercises:
        outcomes = [g.outcomes[exercise].outcome for g in ran if exercise in g.outcomes]
        rows.append([exercise, *(str(outcomes.count(outcome)) for outcome in OUTCOMES)])
    failed = len(results) - sum(1 for graded in results if not graded.failure)
    heading = f"summary: {len(results)} notebook{'s' * (len(results) != 1)}"
    heading += f", {failed} could not be run to the end" if failed else ""
    return "\n".join([heading] + ["  " + line for line in _aligned(rows)])


def write_csv(results: list[Graded], path: Path) -> None:
    """The gradebook: one row per notebook, one column per exercise (its outcome)."""
    exercises = sorted({exercise for graded in results for exercise in graded.outcomes})
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")  # grep and spreadsheets alike
        writer.writerow(["notebook", "lesson", *exercises, "right", "run"])
        for graded in results:
            cells = [graded.outcomes[e].outcome if e in graded.outcomes else ""
                     for e in exercises]
            writer.writerow([str(graded.notebook), graded.lesson or "", *cells,
                             graded.counts()["right"], graded.failure or "ok"])


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in rows]
