"""A user's errors, and the exit code each ends a command with.

These exceptions mean the input is at fault (a config file or field, a workdir
holding another run, a part passed in that does not fit, a data file missing or
damaged) or the run itself (training diverged), not this code. ``cli`` ends the
command with the error's one line and its code; a sweep reports the row as
failed with that line and runs the next. Anything else is a bug and keeps its
traceback. One table, so that the two cannot disagree.
"""

from __future__ import annotations

from lecun_jax.core.modules import PartError
from lecun_jax.data import ConfigError, DataError
from lecun_jax.run.experiment import NumericalError
from lecun_jax.run.workdir import WorkdirError

USAGE, FAULT, INTERRUPTED = 2, 1, 130  # a bad command line or input; a data, numerical or I/O fault; Ctrl-C

EXIT_CODES: dict[type[Exception], int] = {
    ConfigError: USAGE,
    WorkdirError: USAGE,
    PartError: USAGE,
    DataError: FAULT,
    NumericalError: FAULT,
}
USER_ERRORS = tuple(EXIT_CODES)  # for except clauses


def exit_code(e: BaseException) -> int | None:
    """The exit code of a user's error; None for any other exception."""
    return next((code for kind, code in EXIT_CODES.items() if isinstance(e, kind)), None)
