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
