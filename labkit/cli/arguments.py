"""The checks the command line runs on its arguments, before anything starts.

Each function here is an argparse ``type=``: it turns the text a user typed
into a value, or raises :class:`argparse.ArgumentTypeError` with a message
that says what is wrong and what would be right. argparse then prints that
message on one line with the option's name, and the command exits with
status 2. Checking up front matters for a command that runs for a minute:
a typo in ``--trace`` must not be found only after the run.

=====================  ===================================================================
``whole(low, high)``   a whole number in a range (``--clients 100``, ``--events 20``)
``seconds(high)``      a number of seconds > 0 (``--interval 0.5``)
``positive``           a finite number > 0 (``--rate 10``)
``client_counts``      a comma-separated list of clients, ``1,10,100,1000``
``technique``          a technique that :mod:`labkit.push.scale` can simulate
``output(*suffixes)``  a file to write: a known suffix, in a directory that exists and
                       may be written, not a directory itself
``port``               0 (a free port) to 65535
=====================  ===================================================================
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Callable

from labkit import techniques
from labkit.errors import LabkitError
from labkit.push.scale import MAX_CLIENTS, SETUPS

__all__ = ["whole", "seconds", "positive", "client_counts", "technique", "output", "port"]

Invalid = argparse.ArgumentTypeError


def whole(low: int, high: int) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``."""
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise Invalid(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise Invalid(f"{value} is out of range: use {low} to {high}")
        return value
    return parse


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise Invalid(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise Invalid(f"{text!r} must be a number > 0")
    return value


def positive(text: str) -> float:
    """A finite number > 0."""
    return _number(text)


def seconds(high: float) -> Callable[[str], float]:
    """A number of seconds > 0 and at most ``high``."""
    def parse(text: str) -> float:
        value = _number(text)
        if value > high:
            raise Invalid(f"{text} s is longer than the {high:g} s this allows")
        return value
    return parse


def client_counts(text: str) -> list[int]:
    """``1,10,100``: numbers of clients, each 1 to :data:`~labkit.push.scale.MAX_CLIENTS`."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise Invalid(f"{text!r} is not a list of numbers of clients such as 1,10,100")
    counts = [whole(1, MAX_CLIENTS)(part) for part in parts]
    if len(set(counts)) != len(counts):
        raise Invalid(f"{text!r} names a number of clients twice")
    return sorted(counts)


def technique(text: str) -> str:
    """A technique name that :data:`labkit.push.scale.SETUPS` has a row for."""
    if text in SETUPS:
        return text
    simulated = ", ".join(SETUPS)
    try:
        techniques.get(text)
    except LabkitError:
        raise Invalid(f"unknown technique {text!r}: choose from {simulated}") from None
    raise Invalid(f"{text!r} is a technique of the kit, but not one that runs with many "
                  f"clients yet (those are {simulated}); 'labkit serve' starts its server")


def output(*suffixes: str) -> Callable[[str], Path]:
    """A path to write, ending in one of ``suffixes`` (the suffix picks the format)."""
    def parse(text: str) -> Path:
        path = Path(text).expanduser()
        if path.suffix.lower() not in suffixes:
            raise Invalid(f"{text!r} must end in {' or '.join(suffixes)} (the ending picks "
                          f"the format)")
        folder = path.parent
        if not folder.is_dir():
            raise Invalid(f"cannot write {text!r}: {str(folder)!r} is not a directory")
        if path.is_dir():
            raise Invalid(f"cannot write {text!r}: it is a directory")
        writable = os.access(path, os.W_OK) if path.exists() else \
            os.access(folder, os.W_OK | os.X_OK)
        if not writable:
            raise Invalid(f"cannot write {text!r}: permission denied")
        return path
    return parse


port = whole(0, 65535)
"""A TCP port; 0 asks the system for a free one."""
