"""Typed errors. `gale_cli.main` is the one place that turns them into messages and exit codes."""

from __future__ import annotations


class GaleError(Exception):
    """An error a person can act on: a message, an optional hint, and an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(GaleError):
    """Bad usage or invalid input (exit 2)."""

    exit_code = 2


class InvalidSpec(UsageError):
    """A spec that failed validation; `problems` are (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]], hint: str | None = None) -> None:
        lines = "".join(f"\n  {field}: {message}" for field, message in problems)
        super().__init__("the deployment spec is not valid:" + lines, hint)
        self.problems = problems


class ClusterError(GaleError):
    """The cluster refused or failed an operation (exit 1)."""


class ClusterUnreachable(ClusterError):
    """The Ray dashboard could not be reached."""


class AuthError(ClusterError):
    """The Ray dashboard refused gale's token."""


class DeployFailed(ClusterError):
    """Ray reported DEPLOY_FAILED (or dropped the application) while gale waited for it."""


class DeployTimeout(ClusterError):
    """The application did not reach RUNNING before the deadline."""
