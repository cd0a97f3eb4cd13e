"""docs/instructors.md cannot rot: every command in it runs here.

Each fenced block is run according to its kind:

- ``bash``: in ``bash -euo pipefail``, in a scratch folder holding a copy of ``notebooks/``,
  with the kit's virtual environment first on ``PATH``; it must exit 0 (a block checks its
  own claims with ``test``, ``grep -q`` ...);
- ``python``: the block as a script, run by the venv's Python in such a folder (matplotlib
  without a display); it must exit 0 (its claims are ``assert`` lines);
- ``yaml``: parsed (a JupyterHub configuration cannot be applied in a test);
- ``text`` and ``dockerfile``: not run. ``text`` holds what never ends (``make lab`` serves
  JupyterLab until Ctrl-C; the memory bench runs for minutes), what needs the network (a
  Binder URL, checked by tests/test_binder.py) or sample output; ``dockerfile`` needs a
  registry and a container build. A block of any other kind fails the test, so a command
  cannot slip out of it by its label.

Every block is bounded in time; the whole guide runs in well under a minute.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "instructors.md"
RUN = ("bash", "python")
PARSED = ("yaml",)
NOT_RUN = ("text", "dockerfile")
FENCE = re.compile(r"^( *)```(\S*)\n(.*?)^\1```$", re.MULTILINE | re.DOTALL)
SECONDS = 120
"""Longest one block may take (they take a few seconds each)."""


def blocks() -> list[tuple[str, str, int]]:
    """Every fenced block of the guide: (kind, text without its indent, line number)."""
    text = GUIDE.read_text()
    found = []
    for match in FENCE.finditer(text):
        indent, kind, body = match.groups()
        lines = [line[len(indent):] if line.startswith(indent) else line
                 for line in body.splitlines()]
        found.append((kind, "\n".join(lines) + "\n", text.count("\n", 0, match.start()) + 1))
    return found


BLOCKS = blocks()


def block_ids(kinds: tuple[str, ...]) -> list:
    return [pytest.param(kind, body, id=f"{kind}-line-{line}")
            for kind, body, line in BLOCKS if kind in kinds]


@pytest.fixture
def scratch(tmp_path):
    """A folder like a checkout's, for the commands: a copy of the lessons."""
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    return tmp_path


def environment() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
               MPLBACKEND="Agg")
    for name in ("LABKIT_BROWSER_URL", "JUPYTERHUB_SERVICE_PREFIX", "LABKIT_GRADE_LOG"):
        env.pop(name, None)  # the guide's commands start from a student's default
    return env


def test_the_guide_has_blocks_of_known_kinds_only():
    kinds = [kind for kind, _, _ in BLOCKS]
    assert set(kinds) <= set(RUN + PARSED + NOT_RUN), kinds
    assert kinds.count("bash") >= 5 and kinds.count("python") >= 3, kinds


def test_the_guides_memory_figures_are_the_measured_ones():
    guide = GUIDE.read_text()
    sizing = guide[guide.index("## Sizing a hub"):]
    sizing = sizing[:sizing.index("\n## ", 1)]
    figures = set(re.findall(r"\b(\d+) MB\b", sizing))
    assert len(figures) >= 4, "the section states the measured memory"
    measured = (ROOT / "docs" / "benchmarks.md").read_text()
    missing = sorted(f for f in figures if not re.search(rf"\b{f} MB\b", measured))
    assert not missing, f"{missing} MB in the guide but not in docs/benchmarks.md"


@pytest.mark.parametrize("kind, body", block_ids(("bash",)))
def test_each_bash_block_runs(scratch, kind, body):
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=scratch,
                          env=environment(), capture_output=True, text=True,
                          timeout=SECONDS, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{body}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("kind, body", block_ids(("python",)))
def test_each_python_block_runs(scratch, kind, body):
    script = scratch / "block.py"
    script.write_text(body)
    done = subprocess.run([sys.executable, str(script)], cwd=scratch, env=environment(),
                          capture_output=True, text=True, timeout=SECONDS,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{body}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


@pytest.mark.parametrize("kind, body", block_ids(PARSED))
def test_each_yaml_block_parses(kind, body):
    assert isinstance(yaml.safe_load(body), dict)
