"""The package's public face: explicit exports, one error family, silent logging."""

import logging

import labkit
import labkit.webhooks
from labkit import errors


def test_every_exported_name_exists():
    for module in (labkit, labkit.webhooks, labkit.queues):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"


def test_every_labkit_error_shares_one_root():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.LabkitError)


def test_library_loggers_have_a_null_handler():
    for name in ("labkit", "tornado"):
        handlers = logging.getLogger(name).handlers
        assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_every_labkit_error_is_defined_in_errors_and_exported():
    import importlib
    import pkgutil

    modules = [importlib.import_module(m.name)
               for m in pkgutil.walk_packages(labkit.__path__, "labkit.")
               if not m.name.endswith("__main__")]  # the command line: importing it runs it
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, errors.LabkitError):
                assert value.__module__ == "labkit.errors", f"{value} lives in {module.__name__}"
                assert value.__name__ in errors.__all__, value
    for name in errors.__all__:
        assert getattr(labkit, name) is getattr(errors, name), f"labkit does not export {name}"


def test_errors_are_also_the_builtin_they_resemble():
    assert issubclass(errors.WaitTimeout, TimeoutError)
    for name in ("ClockError", "FeedError", "PolicyError", "RecordKindError",
                 "UnknownTechniqueError", "CursorError", "HubError"):
        assert issubclass(getattr(errors, name), ValueError), name
    assert issubclass(errors.UsageError, TypeError)


def test_importing_the_kit_or_its_webhooks_loads_no_plotting():
    import subprocess
    import sys

    code = ("import sys, labkit, labkit.webhooks, labkit.debug, labkit.hub\n"
            "print(sorted(m for m in ('matplotlib', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
    assert "matplotlib" in subprocess.run(
        [sys.executable, "-c", "import sys, labkit; labkit.plots; print(list(sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True).stdout
