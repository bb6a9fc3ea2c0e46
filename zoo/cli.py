"""The command-line apps' error handling: a user's mistake is one ``error: ...`` line, a bug a traceback.

Wrap the task function of a Hydra app (under ``@hydra.main``, so it runs inside Hydra's job) or any
``main`` with :func:`guard`::

    @hydra.main(version_base="1.3", config_path="../configs", config_name="train")
    @guard
    def main(cfg: DictConfig) -> float | None: ...

A user error (:func:`zoo.errors.is_user_error`: a :class:`zoo.errors.UserError` such as
:class:`zoo.checkpoint.CheckpointError`, or a ``ValueError`` / ``TypeError`` / ``FileNotFoundError``
raised while the config was interpreted) prints ``error: <message>`` on stderr, is written to the
run's log file, and exits with status :data:`EXIT_USER_ERROR` (2). Any other exception is a bug and
propagates with its traceback. ``ZOO_FULL_ERROR=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``) shows the
traceback of user errors too. Under ``torchrun`` only rank 0 prints; every rank exits with status 2.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import is_user_error

EXIT_USER_ERROR = 2
FULL_ERROR_VARIABLES = ("ZOO_FULL_ERROR", "HYDRA_FULL_ERROR")

F = TypeVar("F", bound=Callable[..., Any])


def full_error() -> bool:
    """True when ``ZOO_FULL_ERROR`` or ``HYDRA_FULL_ERROR`` asks for tracebacks of user errors too."""
    return any(
        os.environ.get(name, "").strip() not in ("", "0", "false", "False") for name in FULL_ERROR_VARIABLES
    )


def report(err: BaseException) -> None:
    """Print ``error: <message>`` on stderr (rank 0 only) and add it to the log files of the run."""
    message = str(err) or type(err).__name__
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"error: {message}", file=sys.stderr, flush=True)
    record = logging.LogRecord("zoo.cli", logging.ERROR, __file__, 0, "error: %s", (message,), None)
    for handler in logging.getLogger().handlers:  # the run's train.log, not the console (printed above)
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def guard(fn: F) -> F:
    """Run ``fn``; a user error is :func:`report`-ed and exits with status 2, anything else propagates."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if not is_user_error(err) or full_error():
                raise
            report(err)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]
