"""What Binder (repo2docker) needs to launch the lessons from this repository's own files.

Checked statically, since a Binder build takes minutes and the network. The rules below are
repo2docker's (jupyterhub/repo2docker, ``buildpacks/base.py`` and ``buildpacks/conda``):

- a ``binder/`` folder, when present, is where every configuration file is read from, and
  ``binder/`` with ``.binder/`` is refused; a ``Dockerfile`` there would replace the rest;
- the conda build pack reads the Python version only from ``python=X.Y`` (or ``==``);
  anything else builds on its default (3.10), older than the kit allows;
- it installs ``environment.yml`` before it copies the repository, unless a pip line is a
  local path it recognises (``-e .``, not a quoted ``-e ".[test]"``), so the kit itself is
  installed by ``postBuild``, which runs after the copy, from the repository's root.
"""

import os
import re
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
LINK = re.compile(r"https://mybinder\.org/v2/gh/[^\s)\]`]+")


def conda_packages(path: Path) -> dict[str, str]:
    """The conda dependencies of an environment file: name -> the whole spec."""
    environment = yaml.safe_load(path.read_text())
    specs = [item for item in environment["dependencies"] if isinstance(item, str)]
    return {re.split(r"[<>=! ]", spec, maxsplit=1)[0]: spec for spec in specs}


def test_binder_folder_is_the_one_repo2docker_reads():
    assert BINDER.is_dir() and not (ROOT / ".binder").exists()
    assert not (BINDER / "Dockerfile").exists() and not (ROOT / "Dockerfile").exists()


def test_binder_environment_parses_and_names_what_the_lessons_need():
    environment = yaml.safe_load((BINDER / "environment.yml").read_text())
    assert environment["channels"] == ["conda-forge"]
    packages = conda_packages(BINDER / "environment.yml")
    assert {"jupyterlab", "jupyter-server-proxy", "pip"} <= set(packages)


def test_python_is_pinned_the_way_repo2docker_reads_it_and_the_kit_allows():
    spec = conda_packages(BINDER / "environment.yml")["python"]
    found = re.match(r"python\s*=+\s*([\d\.]*)", spec)  # repo2docker's own pattern
    assert found and found.group(1).count(".") == 1, spec
    version = tuple(int(part) for part in found.group(1).split("."))
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required.startswith(">=")
    assert version >= tuple(int(part) for part in required[2:].split("."))


def test_binder_installs_the_same_packages_as_the_root_environment():
    root = conda_packages(ROOT / "environment.yml")
    binder = conda_packages(BINDER / "environment.yml")
    del root["python"], binder["python"]
    assert binder == root


def test_no_pip_line_runs_before_the_repository_is_there():
    environment = yaml.safe_load((BINDER / "environment.yml").read_text())
    sections = [item for item in environment["dependencies"] if isinstance(item, dict)]
    assert sections == [], "the kit is installed by binder/postBuild, after the copy"


def test_post_build_is_an_executable_script_that_installs_the_kit_from_the_checkout():
    script = BINDER / "postBuild"
    assert os.access(script, os.X_OK)
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -euo pipefail" in lines, "a failing install must fail the build"
    assert 'cd "$(dirname "$0")/.."' in lines
    assert "python -m pip install --no-cache-dir --editable ." in lines


def test_binder_links_are_well_formed_and_open_an_existing_notebook_in_jupyterlab():
    links = [(name, link) for name in ("README.md", "docs/instructors.md")
             for link in LINK.findall((ROOT / name).read_text())]
    assert {name for name, _ in links} == {"README.md", "docs/instructors.md"}
    for name, link in links:
        parts = urlsplit(link)
        owner, repo, ref = parts.path.split("/")[3:6]
        assert parts.path == f"/v2/gh/{owner}/{repo}/{ref}" and ref == "HEAD", link
        assert (owner, repo) == ("<owner>", "<repo>"), f"{name}: the fork is the reader's"
        [urlpath] = parse_qs(parts.query)["urlpath"]
        assert urlpath.startswith("lab/tree/"), link
        notebook = ROOT / urlpath.removeprefix("lab/tree/")
        assert notebook.suffix == ".ipynb" and notebook.is_file(), f"{name}: {link}"
