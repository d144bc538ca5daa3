"""The exception types the CLI turns into a one-line message and a non-zero exit, and the line for any other."""


def error_line(err: BaseException) -> str:
    """An unexpected exception as one line: its type and the last line of its message (where the cause is said)."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"[:300]


class SuiteError(Exception):
    """A user-facing error: its message is one line that says what to do.

    `exit_code` 2 means bad input (a study file, an option); 1 means the work itself
    could not be done (missing data, a busy store).
    """

    exit_code = 1


class StudyError(SuiteError):
    """A study file is missing, unreadable or invalid."""

    exit_code = 2


class OptionError(SuiteError):
    """A command-line option (or the variable standing for it) that cannot be honoured as given."""

    exit_code = 2


class DataError(SuiteError):
    """A dataset could not be found or downloaded."""
