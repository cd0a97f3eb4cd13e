"""labkit.children over real processes: a kit child ends when its parent dies, by either line.

Each test starts a *parent* Python process of its own, which starts a kit
child (and, in one test, forks a holder of the lifeline), and reports their
PIDs on one JSON line. The test then kills the parent with SIGKILL (no
Python cleanup runs) and watches, bounded, for the child to end. Cleanup
kills only those processes, by their psutil handle (PID checked against its
start time).
"""

import json
import os
import signal
import subprocess
import sys
import uuid

import psutil
import pytest

from helpers import settle
from labkit import children
from labkit.errors import LabkitError, UsageError

LINUX = sys.platform.startswith("linux")

PARENT = """
import json, os, sys, time
from labkit import children
marker, child_code, fork_holder = sys.argv[1], sys.argv[2], sys.argv[3] == "fork"
child = children.start(["-c", child_code, marker], stdout=-1, text=True)
said = child.stdout.readline().strip()
holder = 0
if fork_holder:
    holder = os.fork()
    if holder == 0:  # keeps the lifeline's writing end open, by inheritance
        time.sleep(60)
        os._exit(0)
print(json.dumps({"child": child.pid, "said": said, "holder": holder}), flush=True)
time.sleep(60)
"""

CHILD = """
import sys, time
print("up", flush=True)
time.sleep(60)
"""

CHILD_WITHOUT_DEATH_SIGNAL = """
import ctypes, sys, time
ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG 0: only the lifeline remains
print("up", flush=True)
time.sleep(60)
"""


@pytest.fixture
def family():
    """Start parent processes (each with a unique marker); kill whatever is left after."""
    started: list[psutil.Process] = []

    def spawn(child_code: str = CHILD, fork_holder: bool = False) -> dict:
        marker = f"labkit-children-test-{uuid.uuid4().hex[:10]}"
        parent = subprocess.Popen([sys.executable, "-c", PARENT, marker, child_code,
                                   "fork" if fork_holder else "-"],
                                  stdout=subprocess.PIPE, text=True)
        started.append(psutil.Process(parent.pid))
        line = parent.stdout.readline()
        assert line, "the parent process ended before it reported its child"
        report = json.loads(line)
        for pid in (report["child"], report["holder"]):
            if pid:
                started.append(psutil.Process(pid))
        assert marker in " ".join(psutil.Process(report["child"]).cmdline())
        return dict(report, parent=parent, marker=marker)

    yield spawn
    for process in started:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    for process in started:
        try:
            process.wait(10)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            pass  # a zombie whose parent is gone: the system reaps it


def ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_parent(report: dict) -> None:
    report["parent"].send_signal(signal.SIGKILL)
    report["parent"].wait(10)
    report["parent"].stdout.close()


def test_sigkill_of_the_parent_ends_the_child(family):
    report = family()
    assert report["said"] == "up"
    assert not ended(report["child"])
    kill_parent(report)
    settle(lambda: ended(report["child"]), "the child's end after its parent's SIGKILL", 10)


def test_the_lifeline_alone_ends_the_child_when_the_parent_dies(family):
    report = family(CHILD_WITHOUT_DEATH_SIGNAL)
    assert report["said"] == "up"
    kill_parent(report)
    settle(lambda: ended(report["child"]), "the child's end through its lifeline", 10)


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux only; the lifeline is tested")
def test_the_death_signal_alone_ends_the_child_when_the_parent_dies(family):
    # a fork of the parent keeps the lifeline open: only the death signal can end the child
    report = family(fork_holder=True)
    kill_parent(report)
    settle(lambda: ended(report["child"]), "the child's end through its death signal", 10)
    assert not ended(report["holder"])  # the lifeline really was still open


def test_a_child_whose_parent_died_before_it_started_listening_ends_at_once():
    # the race: the variable names a parent that is not (any more) this child's parent
    reading, writing = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "labkit.children", "-c", "import time; time.sleep(60)"],
            pass_fds=[reading], env=dict(os.environ, **{
                children.PARENT_VARIABLE: f"{os.getppid()}:{reading}"}))
        try:
            assert child.wait(30) == -signal.SIGTERM
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    finally:
        os.close(reading)
        os.close(writing)


def test_closing_the_lifeline_ends_a_running_child_and_reaping_closes_it():
    child = children.start(["-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        assert child.poll() is None
        child.release()
        assert child.wait(30) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        child.stdout.close()


def test_a_child_runs_its_module_or_code_with_its_arguments_and_leaks_no_descriptor():
    opened = len(os.listdir("/proc/self/fd")) if LINUX else None
    for _ in range(3):
        with children.start(["-c", "import os, sys; print(sys.argv[1:], "
                                   f"{children.PARENT_VARIABLE!r} in os.environ)", "a", "b"],
                            stdout=subprocess.PIPE, text=True) as child:
            assert child.stdout.read().strip() == "['a', 'b'] False"
        assert child.returncode == 0
    with children.start(["-m", "labkit.experiments.processes"], stderr=subprocess.PIPE,
                        text=True) as child:
        assert "usage: python -m labkit.experiments.processes serve" in child.stderr.read()
    assert child.returncode == 1
    if LINUX:
        assert len(os.listdir("/proc/self/fd")) == opened


def test_a_child_started_by_hand_has_no_parent_to_follow(monkeypatch):
    monkeypatch.delenv(children.PARENT_VARIABLE, raising=False)
    assert children.follow_parent() == ()


@pytest.mark.parametrize("args", [[], ["-c"], ["script.py"], ["-x", "code"]])
def test_a_child_that_is_not_python_code_or_a_module_is_refused(args):
    with pytest.raises(UsageError) as caught:
        children.start(args)
    assert isinstance(caught.value, (LabkitError, TypeError))
    assert "['-m', module, ...]" in str(caught.value)


def test_a_kit_child_takes_both_lines_to_its_parent():
    code = ("import os, labkit.children as c; os.environ[c.PARENT_VARIABLE] = "
            "f'{os.getppid()}:{os.dup(0)}'; print(','.join(c.follow_parent()))")
    with children.start(["-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        text=True) as child:
        taken = child.stdout.readline().strip()
        child.stdin.close()
    assert taken == ("death signal,lifeline" if LINUX else "lifeline")
