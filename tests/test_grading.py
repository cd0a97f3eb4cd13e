"""Grading submissions (labkit.exercises.grading, ``labkit grade``): real notebooks run in real
kernels, outcomes read from what ``check`` records, the command's tables, CSV and exit status.

Kernels run the two shortest lessons (00 and 03, a few seconds each) and a few tiny
notebooks written here; nbval runs every lesson elsewhere.
"""

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from labkit.cli import main
from labkit.exercises import GRADE_LOG, check, registered
from labkit.exercises.grading import (OUTCOMES, exercise_cells, grade, lesson_of,
                                      reference_answer, with_solutions)
from labkit.errors import UsageError

from helpers import settle

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
START = NOTEBOOKS / "00_start_here.ipynb"
SECURING = NOTEBOOKS / "03_securing_webhooks.ipynb"
LESSON_NOTEBOOKS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def labkit(*args: str, cwd: Path = ROOT, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m labkit.cli ARGS``, as an instructor runs it (bounded)."""
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)


def answered(source: Path, answers: dict[str, str | None], into: Path) -> Path:
    """A copy of a lesson with some exercise cells rewritten (None deletes the cell)."""
    notebook = nbformat.read(source, as_version=4)
    cells = exercise_cells(notebook)
    for index in sorted(cells, reverse=True):
        if cells[index] in answers:
            if answers[cells[index]] is None:
                del notebook.cells[index]
            else:
                notebook.cells[index].source = answers[cells[index]]
    nbformat.write(notebook, into)
    return into


def outcomes_of(graded) -> dict[str, str]:
    return {exercise: item.outcome for exercise, item in graded.outcomes.items()}


# -- what check records -------------------------------------------------------------------


def test_check_appends_one_json_line_per_outcome_to_the_grade_log(tmp_path, monkeypatch):
    log = tmp_path / "outcomes.jsonl"
    monkeypatch.setenv(GRADE_LOG, str(log))

    class Unreadable:  # iterating it fails inside the check: neither right nor refused
        def __iter__(self):
            raise ZeroDivisionError("boom")

    check("03.4", ..., quiet=True)
    check("03.4", reference_answer("03.4"), quiet=True)
    with pytest.raises(AssertionError):
        check("03.4", "1.2.3.4", quiet=True)
    with pytest.raises(ZeroDivisionError):
        check("03.3", Unreadable(), quiet=True)
    with pytest.raises(Exception, match="no exercise"):
        check("99.9", 1)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["exercise"], line["outcome"]) for line in lines] == [
        ("03.4", "not attempted"), ("03.4", "right"), ("03.4", "not yet"), ("03.3", "error")]
    assert "leftmost entry" in lines[2]["detail"]
    assert lines[3]["detail"] == "ZeroDivisionError: boom"


def test_check_writes_nothing_when_the_variable_is_unset(tmp_path, monkeypatch):
    monkeypatch.delenv(GRADE_LOG, raising=False)
    monkeypatch.chdir(tmp_path)
    assert check("03.4", reference_answer("03.4"), quiet=True) is True
    assert list(tmp_path.iterdir()) == []


# -- finding exercises, lessons and reference answers (no kernel) -----------------------------


@pytest.mark.parametrize("path", LESSON_NOTEBOOKS, ids=lambda path: path.stem)
def test_each_lesson_has_one_exercise_cell_per_exercise_of_its_lesson(path):
    notebook = nbformat.read(path, as_version=4)
    lesson = lesson_of(notebook, path)
    assert lesson == path.name[:2]
    mine = [exercise for exercise in registered() if exercise.startswith(lesson + ".")]
    assert sorted(exercise_cells(notebook).values()) == mine


def test_a_renamed_submission_is_placed_by_its_cells_and_an_empty_one_by_nothing():
    notebook = nbformat.read(SECURING, as_version=4)
    assert lesson_of(notebook, Path("alice.ipynb")) == "03"
    assert lesson_of(new_notebook(cells=[new_code_cell("1 + 1")]), Path("bob.ipynb")) is None


def test_solutions_replace_only_the_exercise_cells_of_a_copy():
    notebook = nbformat.read(SECURING, as_version=4)
    solved = with_solutions(notebook)
    cells = exercise_cells(notebook)
    assert exercise_cells(solved) == cells
    for index, (before, after) in enumerate(zip(notebook.cells, solved.cells)):
        if index in cells:
            assert "answer = ..." in before.source and "reference_answer(" in after.source
        else:
            assert before == after
    with pytest.raises(UsageError, match="no reference answer"):
        reference_answer("03.9")


# -- grading real notebooks --------------------------------------------------------------------


def test_an_untouched_lesson_grades_as_all_not_attempted():
    [graded] = grade([START])
    assert graded.failure == "" and graded.lesson == "00"
    assert outcomes_of(graded) == {"00.1": "not attempted", "00.2": "not attempted",
                                   "00.3": "not attempted"}
    assert graded.counts() == dict.fromkeys(OUTCOMES, 0) | {"not attempted": 3}


def test_a_submission_grades_each_exercise_as_it_was_answered(tmp_path):
    submission = answered(SECURING, {
        "03.1": 'answer = "the clocks\' disagreement plus the time in transit"\n'
                'check("03.1", answer)',
        "03.2": 'check("03.2", my_body)',         # a name the student never defined
        "03.3": None,                             # the cell was deleted
        "03.4": 'answer = "1.2.3.4"\ncheck("03.4", answer)',
    }, tmp_path / "alice.ipynb")
    [graded] = grade([submission])
    assert graded.failure == "" and graded.lesson == "03"
    assert outcomes_of(graded) == {"03.1": "right", "03.2": "error", "03.3": "missing",
                                   "03.4": "not yet"}
    assert graded.outcomes["03.2"].detail == "NameError: name 'my_body' is not defined"
    assert "leftmost entry" in graded.outcomes["03.4"].detail


# -- the command -------------------------------------------------------------------------------


def test_grade_solutions_of_two_lessons_are_all_right_in_the_tables_and_the_csv(tmp_path):
    gradebook = tmp_path / "grades.csv"
    done = labkit("grade", "--solutions", "--jobs", "2", "--csv", str(gradebook),
                  str(START.relative_to(ROOT)), str(SECURING.relative_to(ROOT)))
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "no kernel's own notes among the tables"
    assert "notebooks/00_start_here.ipynb: lesson 00, 3 of 3 right" in done.stdout
    assert "notebooks/03_securing_webhooks.ipynb: lesson 03, 4 of 4 right" in done.stdout
    summary = done.stdout.split("summary: 2 notebooks\n")[1].splitlines()
    assert summary[0].split() == ["exercise", "right", "not", "yet", "not", "attempted",
                                  "error", "missing"]
    assert [row.split() for row in summary[1:]] == [
        [exercise, "1", "0", "0", "0", "0"]
        for exercise in ("00.1", "00.2", "00.3", "03.1", "03.2", "03.3", "03.4")]
    with open(gradebook, newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["notebook", "lesson", "00.1", "00.2", "00.3", "03.1", "03.2", "03.3",
                       "03.4", "right", "run"]
    assert rows[1] == ["notebooks/00_start_here.ipynb", "00", "right", "right", "right",
                       "", "", "", "", "3", "ok"]
    assert rows[2] == ["notebooks/03_securing_webhooks.ipynb", "03", "", "", "",
                       "right", "right", "right", "right", "4", "ok"]


def test_a_run_that_fails_exits_1_and_the_other_notebooks_are_still_graded(tmp_path):
    nbformat.write(new_notebook(cells=[
        new_code_cell("from labkit.exercises import check, registered\nregistered()"),
        new_code_cell('import time\ntime.sleep(60)\ncheck("00.1", "much higher")'),
        new_code_cell('check("00.2", "half")'),          # refused at once: not a number
        new_code_cell("import os\nos._exit(3)"),
        new_code_cell('check("00.3", print)'),
    ]), tmp_path / "crashes.ipynb")
    (tmp_path / "broken.ipynb").write_text('{"cells": 1}')
    nbformat.write(new_notebook(cells=[new_code_cell("print('no exercises here')")]),
                   tmp_path / "unplaced.ipynb")
    gradebook = tmp_path / "grades.csv"
    done = labkit("grade", "crashes.ipynb", "broken.ipynb", "unplaced.ipynb",
                  "--timeout", "8", "--csv", "grades.csv", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    failures = done.stderr.splitlines()
    assert len(failures) == 3, done.stderr
    assert failures[0].startswith("labkit grade: failed: crashes.ipynb: the kernel died")
    assert failures[1].startswith("labkit grade: failed: broken.ipynb: not a notebook")
    assert failures[2].startswith("labkit grade: failed: unplaced.ipynb: cannot tell its lesson")
    with open(gradebook, newline="") as file:
        rows = {row["notebook"]: row for row in csv.DictReader(file)}
    crashed = rows["crashes.ipynb"]
    assert (crashed["00.1"], crashed["00.2"], crashed["00.3"]) == ("error", "not yet", "error")
    assert crashed["run"].startswith("the kernel died")
    assert rows["broken.ipynb"]["lesson"] == "" and rows["unplaced.ipynb"]["00.1"] == ""
    assert "CellTimeout: the cell ran longer than 8 s" in done.stdout
    assert "its cell never ran" in done.stdout


def ended(pid: int) -> bool:
    """Whether process ``pid`` is gone (or a zombie nobody has reaped yet: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_ctrl_c_stops_grading_at_once_and_the_kernel_ends_with_it(tmp_path):
    nbformat.write(new_notebook(cells=[
        new_code_cell("import os\nopen('kernel.pid', 'w').write(str(os.getpid()))"),
        new_code_cell("import time\ntime.sleep(60)"),
    ]), tmp_path / "slow.ipynb")
    grader = subprocess.Popen([sys.executable, "-m", "labkit.cli", "grade", "slow.ipynb",
                               "--lesson", "00"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
    try:
        pid_file = tmp_path / "kernel.pid"
        settle(lambda: pid_file.exists() and pid_file.read_text(), "the kernel's first cell",
               seconds=60)
        kernel = int(pid_file.read_text())
        grader.send_signal(signal.SIGINT)
        out, err = grader.communicate(timeout=30)
    finally:
        if grader.poll() is None:
            grader.kill()
            grader.wait(timeout=10)
    assert grader.returncode == 130, out + err
    assert err == "labkit grade: interrupted\n"
    settle(lambda: ended(kernel), "the kernel ending after its grader", seconds=20)


def test_the_lesson_option_places_a_submission_and_lines_check_never_wrote_are_ignored(
        tmp_path):
    scribble = ('import os\nwith open(os.environ["LABKIT_GRADE_LOG"], "a") as log:\n'
                '    log.write(\'not json\\n[1]\\n{"exercise": "00.1", "outcome": "great"}\\n\')\n'
                'open("scribbled", "w").close()')
    nbformat.write(new_notebook(cells=[new_code_cell(scribble)]), tmp_path / "bob.ipynb")
    [graded] = grade([tmp_path / "bob.ipynb"], lesson="00")
    assert graded.failure == "" and graded.lesson == "00"
    assert (tmp_path / "scribbled").exists(), "the cell wrote its lines to the log"
    assert outcomes_of(graded) == dict.fromkeys(["00.1", "00.2", "00.3"], "missing")


@pytest.mark.parametrize("args, says", [
    (["missing.ipynb"], "'missing.ipynb' does not exist"),
    (["grades.csv"], "'grades.csv' is not a notebook"),
    (["bob.ipynb", "--csv", "grades.txt"], "must end in .csv"),
    (["bob.ipynb", "--csv", "nowhere/grades.csv"], "is not a directory"),
    (["bob.ipynb", "--lesson", "3"], "'3' is not a lesson number"),
    (["bob.ipynb", "--lesson", "42"], "lesson '42' has no exercises"),
    (["bob.ipynb", "--timeout", "0"], "must be a number > 0"),
    (["bob.ipynb", "--jobs", "0"], "out of range"),
    ([], "the following arguments are required"),
])
def test_a_bad_argument_exits_2_with_one_line_and_runs_nothing(tmp_path, monkeypatch, capsys,
                                                               args, says):
    nbformat.write(new_notebook(cells=[new_code_cell("1 + 1")]), tmp_path / "bob.ipynb")
    (tmp_path / "grades.csv").write_text("")
    monkeypatch.chdir(tmp_path)
    try:  # in this process: argparse's refusals exit, the kit's own are returned
        status = main(["grade", *args])
    except SystemExit as exited:
        status = exited.code
    out, err = capsys.readouterr()
    assert status == 2, out + err
    assert out == "" and says in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
