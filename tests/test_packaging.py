"""The set-up promises: two commands, one environment description per package manager."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


CONDA_NAMES = {"redis-py": "redis"}
"""conda-forge packages whose PyPI name differs (conda-forge's own "redis" is the server)."""


def package_name(requirement: str) -> str:
    name = re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()
    return CONDA_NAMES.get(name, name)


def conda_runtime_packages() -> set[str]:
    """Conda packages listed in environment.yml, without python, pip and the pip section."""
    names = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        match = re.match(r"^  - ([A-Za-z0-9_.\-]+[^:]*)$", line)
        if match:
            names.add(package_name(match.group(1)))
    return names - {"python", "pip"}


def test_environment_yml_and_pyproject_name_the_same_runtime_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {package_name(r) for r in project["dependencies"]}
    assert pip_names, "pyproject.toml lists no runtime dependencies"
    assert conda_runtime_packages() == pip_names


def test_environment_yml_installs_the_kit_with_its_test_extras():
    text = (ROOT / "environment.yml").read_text()
    assert '-e ".[test]"' in text


def test_readme_shows_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert "scripts/with-redis.sh" in makefile and "redis-server" in ci


def test_makefile_targets_exist_for_both_commands():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "--nbval-lax" in makefile
