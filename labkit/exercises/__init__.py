"""Exercises that check themselves: a student answers in a cell, then runs ``check``.

Every lesson ends with exercises. Each one asks for something the kit can
check: a number measured with a short experiment, a choice, a function. The
student's cell ends with one line::

    answer = ...                      # replace ... with your answer
    check("04.2", answer)

and ``check`` says one of three things:

* **not attempted yet** (the answer is still ``...``, or a function that
  returns ``...``): a gentle note, and no error, so a notebook full of
  untouched exercises still runs top to bottom (and CI stays green);
* **right**: a line that says so and why it is right;
* **not yet right**: :class:`~labkit.errors.ExerciseNotYet` (an
  ``AssertionError``) whose message says what is wrong and hints at why,
  never just "wrong".

Checks live beside the lesson they belong to (``labkit/exercises/lesson04.py``
...), each a small function registered with :func:`exercise`. Reference
answers live outside the notebooks, in ``solutions/`` at the top of the
repository, so a student does not meet them by accident; the test suite
proves that every reference answer passes its check and that every check
refuses the typical wrong answers.

Grading: when the environment variable ``LABKIT_GRADE_LOG`` names a file,
``check`` also appends one JSON line per call to it, what it decided::

    {"exercise": "03.2", "outcome": "not yet", "detail": "the answer is the raw body ..."}

(``outcome`` is ``right``, ``not yet``, ``not attempted`` or ``error``: the
check itself raised something else, such as a student's function that
fails when called). ``labkit grade`` (:mod:`labkit.exercises.grading`) sets
it for the kernel that runs a submission, so it reads outcomes rather than
scraping printed text. Unset, ``check`` writes nothing.

Writing a check::

    @exercise("04.2", "Pick the jitter that spreads retries the most")
    def _(answer):
        if answer not in POLICIES:
            raise NotYet(f"{answer!r} is not one of {POLICIES}", hint="copy a name from the list")
        if answer != "full":
            raise NotYet("...", hint="...")
        return "Full jitter draws each wait anywhere in [0, cap] ..."
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable

from labkit.errors import ExerciseNotYet, LabkitError

__all__ = ["check", "exercise", "NotYet", "Exercise", "registered", "TODO", "GRADE_LOG"]

TODO = ...
"""What an answer is before the student writes one (``answer = ...``)."""

GRADE_LOG = "LABKIT_GRADE_LOG"
"""Environment variable: a file to which :func:`check` appends a JSON line per outcome."""

_LESSONS = ("lesson00", "lesson01", "lesson02", "lesson03", "lesson04", "lesson05",
            "lesson06", "lesson07", "lesson08", "lesson09")


class NotYet(Exception):
    """Raised by a check: the answer is not right yet. ``hint`` says where to look."""

    def __init__(self, problem: str, *, hint: str = ""):
        self.problem = problem
        self.hint = hint
        super().__init__(problem)


class _NotAttempted(Exception):
    """The answer (or what a function answer returned) is still ``...``."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: its id (``"04.2"``: lesson 04, exercise 2), its title and its check."""

    id: str
    title: str
    check: Callable[[Any], str]


_REGISTRY: dict[str, Exercise] = {}


def exercise(exercise_id: str, title: str) -> Callable[[Callable[[Any], str]], Callable]:
    """Register the decorated function as the check of ``exercise_id``.

    The function gets the student's answer and returns a sentence saying why
    it is right, or raises :class:`NotYet`. It may call :func:`attempted` on
    values it computes from the answer (what a function answer returned).
    """
    def register(function: Callable[[Any], str]) -> Callable[[Any], str]:
        _REGISTRY[exercise_id] = Exercise(exercise_id, title, function)
        return function
    return register


def attempted(value: Any) -> Any:
    """``value``, unless it is still ``...`` (then the exercise counts as not attempted)."""
    if value is TODO:
        raise _NotAttempted()
    return value


def registered() -> dict[str, Exercise]:
    """Every exercise the kit can check, by id (loads every lesson's checks)."""
    for lesson in _LESSONS:
        try:
            importlib.import_module(f"labkit.exercises.{lesson}")
        except ModuleNotFoundError as exc:
            if exc.name != f"labkit.exercises.{lesson}":
                raise
    return dict(sorted(_REGISTRY.items()))


def check(exercise_id: str, answer: Any = TODO, *, quiet: bool = False) -> bool | None:
    """Check ``answer`` for exercise ``exercise_id`` and say how it went.

    Returns True when right, None when not attempted yet; raises
    :class:`~labkit.errors.ExerciseNotYet` (an ``AssertionError``) with what
    is wrong and a hint when not. ``quiet`` suppresses the printed line
    (the test suite uses it).
    """
    exercises = registered()
    if exercise_id not in exercises:
        raise LabkitError(f"there is no exercise {exercise_id!r}: the ids look like "
                          f"{', '.join(list(exercises)[:3])} ... (lesson.number)")
    item = exercises[exercise_id]
    try:
        reason = item.check(attempted(answer))
    except _NotAttempted:
        _record(item.id, "not attempted")
        _say(quiet, f"Exercise {item.id} ({item.title}): not attempted yet. Replace the ... "
                    f"with your answer and run this cell again.")
        return None
    except NotYet as wrong:
        _record(item.id, "not yet", wrong.problem)
        hint = f"\nHint: {wrong.hint}" if wrong.hint else ""
        raise ExerciseNotYet(f"Exercise {item.id} ({item.title}) is not right yet: "
                             f"{wrong.problem}{hint}") from None
    except Exception as failed:  # the check could not decide: say so to a grader, then raise
        _record(item.id, "error", f"{type(failed).__name__}: {failed}")
        raise
    _record(item.id, "right")
    _say(quiet, f"Exercise {item.id} ({item.title}): right. {reason}")
    return True


def _record(exercise_id: str, outcome: str, detail: str = "") -> None:
    """Append the outcome to ``$LABKIT_GRADE_LOG`` as one JSON line, when it is set."""
    path = os.environ.get(GRADE_LOG)
    if path:
        line = json.dumps({"exercise": exercise_id, "outcome": outcome, "detail": detail})
        with open(path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


def _say(quiet: bool, line: str) -> None:
    if not quiet:
        print(line)
