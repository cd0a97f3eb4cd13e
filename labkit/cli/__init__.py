"""``labkit``: the kit's experiments and servers from a terminal, without a notebook.

Instructors reuse the kit in exercises, scripts and slides. This command
line calls the very functions the lessons call (:func:`labkit.push.scale.run_clients`,
the ``serve_*`` helpers, :mod:`labkit.plots`), so a number printed here is
the number a notebook would show for the same arguments:

=====================================================  ==========================================
command                                                what it does
=====================================================  ==========================================
``labkit run sse --clients 100 --events 50``           one technique, N clients, the same seeded
                                                       events; prints its row: requests, bytes
                                                       per event, p50/p99, connections, CPU
``labkit compare polling long-polling sse websocket``  the same events for each, an aligned
                                                       table; ``--trace`` (.csv/.json) and
                                                       ``--chart`` (.png/.svg)
``labkit scaling polling sse --clients 1,10,100``      the sweep over numbers of clients
``labkit serve sse``                                   a server in the foreground on 127.0.0.1
                                                       until Ctrl-C: ``receiver``, ``inspector``,
                                                       ``sse``, ``polling``, ``long-polling``,
                                                       ``websocket``, ``push-service``
``labkit grade submissions/*.ipynb --csv grades.csv``  run students' notebooks, a table of each
                                                       exercise's outcome; ``--solutions``
=====================================================  ==========================================

``labkit COMMAND --help`` explains each, with examples
(:mod:`labkit.cli.experiments`, :mod:`labkit.cli.serving`, :mod:`labkit.cli.grading`).

Exit status:

====  ========================================================================================
0     everything asked for happened
1     a run failed: an event did not reach every client, a wait ran out, a file could not be
      written; the message on stderr says which
2     a bad argument (an unknown technique, ``--clients 0``, ``--trace out.txt``, a directory
      that does not exist, a port in use ...): one line on stderr, never a traceback
130   interrupted by Ctrl-C during a run
====  ========================================================================================

Tables go to stdout; a progress bar goes to stderr only when it is a
terminal (:mod:`labkit.cli.textbar`), so a pipe or a test sees the table
alone. A bug in the kit still shows its traceback: that is for us to fix.

The installed console script is ``labkit`` (``labkit = "labkit.cli:main"``);
``python -m labkit`` and ``python -m labkit.cli`` are the same command.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Sequence

from labkit.errors import LabkitError, PortInUseError

__all__ = ["main", "parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (usage is what ``--help`` is for)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def parser() -> argparse.ArgumentParser:
    """The whole command line: every command and its options."""
    from labkit.cli import experiments, grading, serving
    top = _Parser(prog="labkit", formatter_class=argparse.RawDescriptionHelpFormatter,
                  description="Experiments and servers of labkit, from a terminal.",
                  epilog="examples:\n"
                         "  labkit compare polling long-polling sse websocket --clients 10\n"
                         "  labkit scaling sse websocket --clients 1,10,100 --chart scaling.png\n"
                         "  labkit serve receiver --secret s3cret\n\n"
                         "'labkit COMMAND --help' explains a command.")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    experiments.add_commands(commands)
    serving.add_commands(commands)
    grading.add_commands(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (``sys.argv[1:]`` if None); return the exit status."""
    args = parser().parse_args(argv)
    name = " ".join(["labkit", args.command] + ([args.server] if "server" in args else []))
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # whoever read stdout left (``| head``): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except LabkitError as exc:
        # A LabkitError that is also a ValueError or TypeError is an argument that cannot
        # work (the kit's own checks); any other one is something that went wrong in the run.
        usage = isinstance(exc, (ValueError, TypeError, PortInUseError))
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"{name}: {'error' if usage else 'failed'}: {message}", file=sys.stderr)
        return 2 if usage else 1
