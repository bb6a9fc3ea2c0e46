"""User errors and suspicious input: what the command-line apps print as one line instead of a traceback.

A *user error* is a mistake in what was asked for (a bad value, missing data, the wrong file); the
apps (:mod:`zoo.cli`) print its message alone, ``error: ...``, and exit with status 2. Anything else
is a bug and keeps its traceback. An exception is a user error when it is a :class:`UserError`
(e.g. :class:`zoo.checkpoint.CheckpointError`) or when it was raised while the library interpreted
the user's configuration, inside :func:`user_input` (the ``ValueError`` / ``TypeError`` /
``FileNotFoundError`` of the config, model and data checks, which keep their types for callers
that catch them).

Suspicious but legal input (a stride as long as the sequence, a binary file given as text, a
checkpoint evaluated on another data set) gets one warning line naming the value: :func:`warn_once`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

#: exceptions that, raised while a configuration is interpreted, are the configuration's fault
CONFIG_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)

_MARK = "_zoo_user_error"
_warned: set[tuple[str, str]] = set()


class UserError(Exception):
    """A mistake in what the user asked for; its message says what is wrong and what would be valid."""


def mark_user_error(err: BaseException) -> BaseException:
    """Flag ``err`` (of any type) as a user error, so the apps print its message without a traceback."""
    setattr(err, _MARK, True)
    return err


def is_user_error(err: BaseException) -> bool:
    """True for a :class:`UserError` or an exception flagged by :func:`mark_user_error` / :func:`user_input`."""
    return isinstance(err, UserError) or bool(getattr(err, _MARK, False))


@contextlib.contextmanager
def user_input() -> Iterator[None]:
    """Flag the :data:`CONFIG_ERRORS` raised inside as user errors (types unchanged), e.g. around building
    the trainer, model and data set from a config: their checks raise ``ValueError`` naming the bad value.
    """
    try:
        yield
    except CONFIG_ERRORS as err:
        mark_user_error(err)
        raise


def warn_once(logger: logging.Logger, message: str, *args: object) -> bool:
    """``logger.warning(message, *args)`` the first time this exact message is formed in this process.

    Returns whether it was logged. Models build one attention module per block and data sets may be
    built more than once (train, then evaluate): the user sees each warning once.
    """
    text = message % args if args else message
    key = (logger.name, text)
    if key in _warned:
        return False
    _warned.add(key)
    logger.warning("%s", text)
    return True


def forget_warnings() -> None:
    """Let every :func:`warn_once` message fire again (for tests, and for a new run in the same process)."""
    _warned.clear()
