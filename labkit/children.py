"""Child processes that die with their parent, however the parent dies.

A student's kernel can end in three ways: politely (shutdown, or a restart
that asks first), by SIGTERM then SIGKILL (a restart that does not wait),
or by SIGKILL alone (the out-of-memory killer on a crowded JupyterHub).
SIGKILL runs no Python cleanup: no ``atexit``, no ``finally``. A child the
kit started (a load generator, a server process) must still end, or 200
students leave hundreds of orphans holding ports and memory. So every kit
child is started by :func:`start`, and gets two lines to its parent:

===================  =================================================================
**death signal**     (Linux) the child asks the kernel, with
                     ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, to be sent SIGTERM when the
                     thread that started it ends. If the parent died before that call,
                     the child's parent is no longer the process that started it, so
                     it ends at once instead of waiting for a signal that never comes
**lifeline**         (every POSIX system) a pipe whose writing end only the parent
                     holds; a thread in the child blocks reading it. When the parent
                     ends, or drops the child's :class:`Child` object, the pipe
                     reaches end of file and the child sends itself SIGTERM
===================  =================================================================

Either way the child ends by SIGTERM with its default action (the
operating system closes its sockets, so its ports are free again at once).

Example::

    from labkit import children

    child = children.start(["-m", "labkit.experiments.processes", "serve", "news", ...],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ...                      # a Child is a subprocess.Popen: poll(), wait(), kill(), pid
    child.wait(10)           # reaped: the lifeline closes

The child runs as ``python -m labkit.children -m MODULE ARGS`` (or ``-c
CODE ARGS``): this module's ``__main__`` takes both lines to the parent
first, then runs the module or code as Python itself would. Its command
line therefore always names ``labkit``, which lets a person (or a test)
find the kit's processes with ``ps``.

Thread-safety notes: :func:`start` is safe from any thread, but on Linux
the death signal follows the *thread* that started the child, not the
process: start children from a thread that lives as long as they should
(a notebook cell's, a script's main thread), never from a short-lived
worker thread. A process forked (not exec'd) from the parent inherits the
lifeline's writing end and keeps it open while it lives.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labkit.errors import UsageError

__all__ = ["PARENT_VARIABLE", "Child", "follow_parent", "start"]

PARENT_VARIABLE = "LABKIT_PARENT"
"""Environment variable through which a child learns ``<parent pid>:<lifeline fd>``."""
_PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>."""
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
"""The directory holding ``labkit``: the child imports this same copy of the kit."""


class Child(subprocess.Popen):
    """A ``subprocess.Popen`` whose child dies with this process (see the module docstring).

    The lifeline's writing end is closed once the child is reaped (``poll()``
    or ``wait()`` saw it exit) or when this object is garbage collected,
    whichever comes first; closing it early ends a child that still runs.
    """

    def __init__(self, python_args: Sequence[str], *, pass_fds: Sequence[int] = (),
                 env: dict[str, str] | None = None, **popen: Any):
        if not python_args or python_args[0] not in ("-m", "-c") or len(python_args) < 2:
            raise UsageError(f"a kit child runs ['-m', module, ...] or ['-c', code, ...], "
                             f"got {list(python_args)!r}")
        reading, writing = os.pipe()  # neither end is inherited unless passed
        env = dict(os.environ if env is None else env)
        env[PARENT_VARIABLE] = f"{os.getpid()}:{reading}"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self._lifeline = weakref.finalize(self, os.close, writing)
        try:
            super().__init__([sys.executable, "-m", "labkit.children", *python_args],
                             pass_fds=(*pass_fds, reading), env=env, **popen)
        except BaseException:
            self._lifeline()
            raise
        finally:
            os.close(reading)

    def release(self) -> None:
        """Close the lifeline now: a child that still runs ends (idempotent)."""
        self._lifeline()

    def poll(self) -> int | None:
        code = super().poll()
        if code is not None:
            self.release()
        return code

    def wait(self, timeout: float | None = None) -> int:
        code = super().wait(timeout)
        self.release()
        return code


def start(python_args: Sequence[str], **popen: Any) -> Child:
    """Start ``python <python_args>`` (``-m module ...`` or ``-c code ...``) as a kit child.

    Keyword arguments go to ``subprocess.Popen`` (``stdin``, ``stdout``,
    ``pass_fds``, ``env`` ...); ``labkit`` is put first on the child's
    ``PYTHONPATH`` so it runs this copy of the kit.
    """
    return Child(python_args, **popen)


def follow_parent() -> tuple[str, ...]:
    """In a child: take both lines to the parent named by :data:`PARENT_VARIABLE`.

    Returns the lines taken (``"death signal"``, ``"lifeline"``); none when
    the variable is not set (the process was started by hand). If the
    parent is gone already, the process ends here.
    """
    spec = os.environ.pop(PARENT_VARIABLE, None)
    if spec is None:
        return ()
    parent, lifeline = (int(part) for part in spec.split(":"))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # an inherited "ignore" would defeat both
    taken = ["death signal"] if _ask_death_signal() else []
    if os.getppid() != parent:  # it died before we asked: nobody will signal us
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=_watch, args=(lifeline,), name="labkit-lifeline",
                     daemon=True).start()
    return (*taken, "lifeline")


def _ask_death_signal() -> bool:
    """Linux: SIGTERM to this process when its parent thread ends. False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no prctl in this C library: the lifeline remains
        return False


def _watch(lifeline: int) -> None:
    """Block on the lifeline; at its end of file (the parent is gone), end this process."""
    try:
        while os.read(lifeline, 1):
            pass  # nobody writes to it; ignore anything that arrives
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def _main(argv: list[str]) -> None:
    """``python -m labkit.children -m MODULE ARGS | -c CODE ARGS``."""
    follow_parent()
    if len(argv) < 2 or argv[0] not in ("-m", "-c"):
        sys.exit("usage: python -m labkit.children -m MODULE [ARGS] | -c CODE [ARGS]")
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})


if __name__ == "__main__":
    _main(sys.argv[1:])
