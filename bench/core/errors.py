"""The one error type for bad user input: the CLI prints its message on one line and exits with code 2."""


class UsageError(ValueError):
    """Bad input from the user: the message names the problem and the fix."""

    exit_code = 2


class OutputError(Exception):
    """Results could not be written (disk full, permissions): the CLI prints one line and exits with code 1; the
    files written before stay intact."""

    exit_code = 1
