"""Mutation testing for labkit: which small wrong changes to the code would no test notice?

A green suite says the code does what the tests check; it does not say the tests check
enough. mutmut answers that: it makes hundreds of *mutants*, each the code with one small
change (``>`` for ``>=``, a default of 301 for 300, an argument dropped, a string
altered), runs the tests against each, and counts the mutants no test noticed. A mutant
that survives is either a gap in the tests or a change that cannot matter.

This runner runs mutmut 3.8 on each module listed in ``mutation/modules.toml``, one module
at a time, each in its own staging folder ``mutation/work/<module>/`` (a copy of
``labkit/``, ``tests/`` and ``pyproject.toml`` with a ``setup.cfg`` that tells mutmut what
to mutate and which tests to run), and judges every mutant:

=================  ==========================================================================
killed             a test failed (or timed out) with the mutant in place
message-only       the mutant changes only human-readable text: an error message, a hint,
                   a report line (decided from the code, see ``message_only``); counted
                   apart, killed or not, because no program reads that text
equivalent         survived, and listed in ``mutation/equivalents.toml`` with why no
                   test can tell it from the original (a reviewed list, not a guess)
real survivor      survived, and neither of the above: a gap for a test to close
=================  ==========================================================================

The score of a module is ``killed / (mutants - message-only - equivalent)``, killed
counted without the message-only ones, and its target is in ``modules.toml``.

Usage (the venv's Python, from the repository root; ``make mutation`` does this)::

    .venv/bin/python mutation/run.py                    # every listed module that exists
    .venv/bin/python mutation/run.py signatures guards  # some, by file name or path
    .venv/bin/python mutation/run.py --no-run trace     # judge the last run again
    .venv/bin/python mutation/run.py --draft backoff    # TOML stubs for the survivors

Options: ``--jobs N`` mutants at once (default 1: the machine is shared), ``--check``
exit 1 when a module misses its target, ``--show-messages`` list surviving message-only
mutants too. Every mutmut run is ``nice -n 10``. The staging folders are disposable
(``mutation/.gitignore`` keeps them out of git).
"""

from __future__ import annotations

import argparse
import ast
import codecs
import difflib
import glob
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
PYTHON = sys.executable

KILLED = {"killed", "timeout", "caught by type check"}
SURVIVED = {"survived", "no tests"}


# -- which modules, which tests --------------------------------------------------------


@dataclass
class Module:
    path: str                      # e.g. labkit/webhooks/signatures.py
    tests: list[str]               # test files, globs expanded
    target: float
    isolation: str = "fork"

    @property
    def slug(self) -> str:
        return self.path.removesuffix(".py").replace("/", "-")


def listed_modules() -> tuple[list[Module], list[str]]:
    """The modules of ``modules.toml`` that exist, and notes about those that do not."""
    config = tomllib.loads((HERE / "modules.toml").read_text(encoding="utf-8"))
    modules, notes = [], []
    for entry in config["module"]:
        paths = sorted(glob.glob(entry["path"], root_dir=ROOT))
        if not paths:
            notes.append(f"{entry['path']}: not written yet")
            continue
        tests = sorted({t for pattern in entry["tests"] for t in glob.glob(pattern, root_dir=ROOT)})
        for path in paths:
            if not tests:
                notes.append(f"{path}: no tests yet ({', '.join(entry['tests'])})")
                continue
            modules.append(Module(path, tests, float(entry["target"]),
                                  entry.get("isolation", "fork")))
    return modules, notes


def chosen(modules: list[Module], names: list[str]) -> list[Module]:
    """The modules named on the command line (by path, file name or slug), or all."""
    if not names:
        return modules

    def called(module: Module) -> set[str]:
        path = Path(module.path)
        return {module.path, path.stem, path.name, module.slug}

    picked = [m for m in modules if called(m) & set(names)]
    unknown = [n for n in names if not any(n in called(m) for m in modules)]
    if unknown:
        sys.exit(f"not in mutation/modules.toml (or not written yet): {', '.join(unknown)}")
    return picked


# -- running mutmut ---------------------------------------------------------------------


def stage(module: Module) -> Path:
    """A fresh copy of the code and tests, with mutmut's configuration for this module."""
    folder = WORK / module.slug
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "labkit", folder / "labkit", ignore=skip)
    shutil.copytree(ROOT / "tests", folder / "tests", ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    tests = "".join(f"\n    {t}" for t in module.tests)
    (folder / "setup.cfg").write_text(
        "# Written by mutation/run.py for one module; edit mutation/modules.toml instead.\n"
        "[mutmut]\n"
        "source_paths = labkit\n"
        f"only_mutate = {module.path}\n"
        f"pytest_add_cli_args_test_selection ={tests}\n"
        f"process_isolation = {module.isolation}\n"
        "use_git_change_detection = false\n",
        encoding="utf-8")
    return folder


def run_mutmut(folder: Path, jobs: int, timeout: float) -> None:
    command = ["nice", "-n", "10", PYTHON, "-m", "mutmut", "run", "--max-children", str(jobs)]
    with open(folder / "mutmut.log", "w", encoding="utf-8") as log:
        done = subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout)
    if done.returncode != 0:
        tail = (folder / "mutmut.log").read_text(encoding="utf-8", errors="replace")[-2000:]
        sys.exit(f"mutmut failed in {folder} (exit {done.returncode}):\n{tail}")


def export(folder: Path) -> list[dict]:
    done = subprocess.run([PYTHON, str(HERE / "export.py")], cwd=folder, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"reading mutmut's results in {folder} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


# -- judging a mutant ---------------------------------------------------------------------


def function_of(name: str) -> str:
    """The function a mutant changed, from its name.

    ``pkg.mod.xǁClassǁmethod__mutmut_3`` is ``Class.method``, ``pkg.mod.x__f__mutmut_1`` ``_f``.
    """
    mangled = re.sub(r"__mutmut_\d+$", "", name.rpartition(".")[2])
    if mangled.startswith("xǁ"):
        return ".".join(part for part in mangled[2:].split("ǁ") if part)
    return mangled.removeprefix("x_")


def changed_lines(original: str, mutant: str) -> tuple[str, str]:
    """The lines the mutant removed and added, stripped, each side joined by newlines."""
    before, after = [], []
    for line in difflib.unified_diff(original.splitlines(), mutant.splitlines(), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        (before if line.startswith("-") else after).append(line[1:].strip())
    return "\n".join(before), "\n".join(after)


def _parse(source: str) -> ast.AST:
    return ast.parse(source.strip() + "\n")


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _differences(a, b):
    """Pairs of the smallest subtrees where two syntax trees differ."""
    if type(a) is not type(b):
        yield a, b
        return
    if not isinstance(a, ast.AST):
        if a != b:
            yield a, b
        return
    for name in a._fields:
        x, y = getattr(a, name, None), getattr(b, name, None)
        if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for p, q in zip(x, y):
                yield from _differences(p, q)
        elif isinstance(x, ast.AST) and isinstance(y, ast.AST):
            yield from _differences(x, y)
        elif x != y:
            yield a, b                    # a value, or a list that grew or shrank
            return


_WORD = re.compile(r"[\w.-]*")            # a reason word, a header name, a key: not prose


def _prose(text: str) -> bool:
    """Three or more space-separated words: a sentence for people, not a token for programs."""
    return sum(1 for word in text.split() if re.search(r"[A-Za-z]{2}", word)) >= 3


def _text_of(node: ast.AST) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return " ".join(v.value for v in node.values
                    if isinstance(v, ast.Constant) and isinstance(v.value, str))


def _string_around(node, parents) -> ast.AST | None:
    """The outermost string literal (plain or f-string) that is or contains ``node``."""
    found = None
    while node is not None:
        if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant)
                                               and isinstance(node.value, str)):
            found = node
        node = parents.get(node)
    return found


def _in_raise(node, parents) -> bool:
    while node is not None:
        if isinstance(node, ast.Raise):
            return True
        node = parents.get(node)
    return False


def message_only(original: str, mutant: str) -> bool:
    """True when every change the mutant makes is to human-readable text.

    A change counts as text when it lies inside a string literal (or an f-string and the
    expressions it formats) on both sides, and that string is a message: inside a
    ``raise`` (except a bare word, such as a rejection's reason ``"malformed"``), or prose
    of three words or more anywhere (hints handed to a helper, report lines). Replacing a
    message by ``None`` or dropping it is not a text change: the message is then gone.
    """
    old, new = _parse(original), _parse(mutant)
    old_parents, new_parents = _parents(old), _parents(new)
    pairs = list(_differences(old, new))
    if not pairs:
        return False
    for a, b in pairs:
        outer, outer_new = _string_around(a, old_parents), _string_around(b, new_parents)
        if outer is None or outer_new is None:
            return False
        text = _text_of(outer)
        raised = _in_raise(outer, old_parents) and not (isinstance(outer, ast.Constant)
                                                         and _WORD.fullmatch(text))
        if not (raised or _prose(text)):
            return False
    return True


def _same_codec(a, b) -> bool:
    try:
        return codecs.lookup(a).name == codecs.lookup(b).name
    except (LookupError, TypeError):
        return False


def codec_name_case(original: str, mutant: str) -> bool:
    """Every change swaps a codec name for another spelling of the same codec."""
    pairs = list(_differences(_parse(original), _parse(mutant)))
    return bool(pairs) and all(isinstance(a, ast.Constant) and isinstance(b, ast.Constant)
                               and a.value != b.value and _same_codec(a.value, b.value)
                               for a, b in pairs)


RULES = {"codec-name-case": codec_name_case}


@dataclass
class Reviewed:
    """The reviewed equivalents: specific mutants, and rules for whole kinds of them."""

    entries: list[dict]
    rules: dict[str, str]
    used: set[int] = field(default_factory=set)

    @classmethod
    def load(cls) -> Reviewed:
        data = tomllib.loads((HERE / "equivalents.toml").read_text(encoding="utf-8"))
        entries = data.get("equivalent", [])
        for entry in entries:
            if not entry.get("why") or entry["why"].startswith("TODO"):
                sys.exit(f"mutation/equivalents.toml: {entry['module']} {entry['function']}: "
                         f"say why the mutant is equivalent, or remove the entry")
        rules = {rule["name"]: rule["why"] for rule in data.get("rule", [])}
        unknown = set(rules) - set(RULES)
        if unknown:
            sys.exit(f"mutation/equivalents.toml names rules run.py does not know: {unknown}")
        return cls(entries, rules)

    def why(self, module: str, row: dict) -> str | None:
        """Why this mutant is equivalent, or None if it is not listed."""
        function = function_of(row["name"])
        before, after = changed_lines(row["original"], row["mutant"])
        for index, entry in enumerate(self.entries):
            if (entry["module"], entry["function"], entry["before"].strip(),
                    entry["after"].strip()) == (module, function, before, after):
                self.used.add(index)
                return entry["why"]
        for name, why in self.rules.items():
            if RULES[name](row["original"], row["mutant"]):
                return why
        return None


# -- the report ---------------------------------------------------------------------------


@dataclass
class Score:
    module: Module
    total: int = 0
    killed: int = 0                 # not counting message-only ones
    message: int = 0
    message_survived: int = 0
    equivalent: int = 0
    real: list[dict] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    broken: list[dict] = field(default_factory=list)      # suspicious, segfault, not checked

    @property
    def counted(self) -> int:
        return self.total - self.message - self.equivalent

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.counted if self.counted else 100.0


def judge(module: Module, rows: list[dict], reviewed: Reviewed) -> Score:
    score = Score(module, total=len(rows))
    for row in rows:
        killed = row["status"] in KILLED
        if message_only(row["original"], row["mutant"]):
            score.message += 1
            if not killed:
                score.message_survived += 1
                score.messages.append(row)
        elif killed:
            score.killed += 1
        elif row["status"] in SURVIVED and reviewed.why(module.path, row):
            score.equivalent += 1
        elif row["status"] in SURVIVED:
            score.real.append(row)
        else:
            score.broken.append(row)
    return score


def describe(row: dict) -> str:
    before, after = changed_lines(row["original"], row["mutant"])
    lines = [f"  {row['name']}  ({row['status']})"]
    lines += [f"    - {line}" for line in before.splitlines()]
    lines += [f"    + {line}" for line in after.splitlines()]
    return "\n".join(lines)


def draft(module: Module, row: dict) -> str:
    before, after = changed_lines(row["original"], row["mutant"])
    return (f"[[equivalent]]\nmodule = {json.dumps(module.path)}\n"
            f"function = {json.dumps(function_of(row['name']))}\n"
            f"before = {json.dumps(before)}\nafter = {json.dumps(after)}\n"
            f'why = "TODO"\n')


def table(scores: list[Score]) -> str:
    head = (f"{'module':34} {'mutants':>7} {'killed':>6} {'message':>7} {'equiv.':>6} "
            f"{'real':>4} {'score':>7} {'target':>6}")
    lines = [head, "-" * len(head)]
    for s in scores:
        mark = "" if s.percent >= s.module.target else "  below target"
        lines.append(f"{s.module.path:34} {s.total:7} {s.killed:6} {s.message:7} "
                     f"{s.equivalent:6} {len(s.real):4} {s.percent:6.1f}% {s.module.target:5.0f}%"
                     f"{mark}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="file names or paths (default: all listed)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--no-run", action="store_true", help="judge the last run again")
    parser.add_argument("--check", action="store_true", help="exit 1 if a module misses its target")
    parser.add_argument("--draft", action="store_true",
                        help="print equivalents.toml stubs for the real survivors")
    parser.add_argument("--show-messages", action="store_true",
                        help="also list the surviving message-only mutants")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds one module's mutmut run may take (default 3600)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    modules, notes = listed_modules()
    modules = chosen(modules, args.modules)
    reviewed = Reviewed.load()
    scores = []
    for module in modules:
        folder = WORK / module.slug
        if args.no_run:
            if not (folder / "mutants").exists():
                sys.exit(f"{module.path}: no earlier run in {folder}; run without --no-run")
        else:
            print(f"{module.path}: mutating, tests {' '.join(module.tests)} ...", flush=True)
            started = time.monotonic()
            run_mutmut(stage(module), args.jobs, args.timeout)
            print(f"{module.path}: done in {time.monotonic() - started:.0f} s", flush=True)
        score = judge(module, export(folder), reviewed)
        scores.append(score)
        for title, rows in (("real survivors", score.real), ("broken runs", score.broken),
                            ("surviving message-only", score.messages if args.show_messages
                             else [])):
            if rows:
                print(f"\n{module.path}: {len(rows)} {title}")
                print("\n".join(describe(row) for row in rows))
        if args.draft and score.real:
            print("\n# equivalents.toml stubs: keep only reviewed ones, each with its why")
            print("\n".join(draft(module, row) for row in score.real))
    print()
    print(table(scores))
    for note in notes:
        print(f"skipped {note}")
    stale = [e for i, e in enumerate(reviewed.entries) if i not in reviewed.used
             and any(s.module.path == e["module"] for s in scores)]
    for entry in stale:
        print(f"stale equivalent (no surviving mutant matches it any more): "
              f"{entry['module']} {entry['function']}: {entry['before']!r}")
    missed = [s for s in scores if s.percent < s.module.target or s.broken]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
