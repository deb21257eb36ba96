"""Errors that the CLI turns into exit codes and one-line messages (no traceback unless --debug).

Exit codes: 0 success, 1 runtime failure, 2 bad usage / config / input, 3 a failed evaluation gate.
"""


class BertcliError(Exception):
    """Base class: a failure we can explain in one line."""

    exit_code = 1


class UsageError(BertcliError):
    """Bad usage, config or input data: the user can fix it. Exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """One or more config problems, all reported at once (one line each)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class RunFailure(BertcliError):
    """The run started but could not finish (diverged loss, disk full...). Exit code 1."""

    exit_code = 1


class GateFailure(BertcliError):
    """An evaluation gate (--fail-under, --max-drop) failed. Exit code 3."""

    exit_code = 3
