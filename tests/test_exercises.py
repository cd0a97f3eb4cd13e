"""Every exercise's check, both ways: the reference answer passes it, typical wrong answers
do not, and an exercise not attempted yet never breaks a top-to-bottom run."""

import importlib.util
from pathlib import Path

import pytest

from labkit.errors import ExerciseNotYet, LabkitError
from labkit.exercises import check, registered

SOLUTIONS = Path(__file__).resolve().parent.parent / "solutions"


def load(lesson: str):
    spec = importlib.util.spec_from_file_location(f"solutions_{lesson}", SOLUTIONS / f"{lesson}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference(exercise_id: str):
    return load(f"lesson{exercise_id.split('.')[0]}")


EXERCISES = sorted(registered())


def test_every_lesson_with_checks_has_a_solutions_file_covering_each_exercise():
    for exercise_id in EXERCISES:
        module = reference(exercise_id)
        assert exercise_id in module.ANSWERS, f"no reference answer for {exercise_id}"
        assert len(module.WRONG.get(exercise_id, ())) >= 2, \
            f"{exercise_id}: list at least two typical wrong answers its check must refuse"


@pytest.mark.parametrize("exercise_id", EXERCISES)
def test_the_reference_answer_passes_its_check(exercise_id, capsys):
    assert check(exercise_id, reference(exercise_id).ANSWERS[exercise_id]) is True
    assert f"Exercise {exercise_id}" in capsys.readouterr().out


@pytest.mark.parametrize("exercise_id", EXERCISES)
def test_typical_wrong_answers_are_refused_with_a_hint(exercise_id):
    for wrong in reference(exercise_id).WRONG[exercise_id]:
        with pytest.raises(ExerciseNotYet) as refused:
            check(exercise_id, wrong, quiet=True)
        message = str(refused.value)
        assert f"Exercise {exercise_id}" in message and "Hint:" in message, message
        assert isinstance(refused.value, AssertionError)


@pytest.mark.parametrize("exercise_id", EXERCISES)
def test_an_exercise_not_attempted_yet_is_a_note_not_an_error(exercise_id, capsys):
    assert check(exercise_id, ...) is None
    assert "not attempted yet" in capsys.readouterr().out


def test_an_unknown_exercise_id_says_what_ids_look_like():
    with pytest.raises(LabkitError, match="no exercise '99.9'"):
        check("99.9", 1)
