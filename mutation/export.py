"""Print every mutant of a finished ``mutmut run`` as JSON: name, status, original and mutant.

Run by ``mutation/run.py`` inside a module's staging folder (where ``setup.cfg`` and
``mutants/`` are), with the venv's Python. It reads mutmut's own result files through
mutmut's own readers, so it is tied to mutmut 3.8 (the Makefile target pins it); run.py
does all the judging, in plain Python, from this output.

Output: a JSON list of ``{"name", "path", "status", "original", "mutant"}``, where
``original`` and ``mutant`` are the source of the one function the mutant changed.
"""

from __future__ import annotations

import json
import sys

import libcst as cst
from mutmut.configuration import config
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import (
    read_functions_from_index,
    read_mutant_function,
    read_mutants_module,
    read_original_function,
)
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files


def functions(name: str, path, module_cache: dict) -> tuple[str, str]:
    """The original and the mutated source of the function mutant ``name`` changed."""
    pair = read_functions_from_index(name, path)
    if pair is None:
        if path not in module_cache:
            module_cache[path] = read_mutants_module(path)
        module = module_cache[path]
        pair = (read_original_function(module, name), read_mutant_function(module, name))
    return tuple(cst.Module([function]).code for function in pair)


def main() -> None:
    config()                                   # reads setup.cfg in the current folder
    rows, cache = [], {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, exit_code in data.exit_code_by_key.items():
            original, mutant = functions(name, path, cache)
            rows.append({"name": name, "path": str(path), "status": status_by_exit_code[exit_code],
                         "original": original, "mutant": mutant})
    json.dump(rows, sys.stdout)


if __name__ == "__main__":
    main()
