"""The one error type for bad user input: the CLI prints its message on one line and exits with code 2."""


class UsageError(ValueError):
    """Bad input from the user: the message names the problem and the fix."""

    exit_code = 2
