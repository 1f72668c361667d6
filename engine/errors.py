"""The engine's exception tree.

Every error an operator may see carries a message written for them: one line that says
what is wrong and what to do. ``StartupError`` is what the CLI turns into that one line
and a non-zero exit; anything else reaching the CLI is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class StartupError(EngineError):
    """The engine cannot start; ``str(error)`` is the one line shown to the operator."""


class ConfigError(StartupError):
    """A configuration value is invalid. The message names the variable, the value
    (hidden for secrets) and what is allowed."""

    def __init__(self, variable: str, value: str | None, allowed: str) -> None:
        self.variable = variable
        self.value = value
        self.allowed = allowed
        shown = "(value hidden)" if value is None else repr(value)
        super().__init__(f"invalid {variable}={shown}: {allowed}")


class ChildStartError(StartupError):
    """A supervised child failed before it reported ``started``."""

    def __init__(self, supervisor: str, child_id: str, cause: BaseException) -> None:
        self.supervisor = supervisor
        self.child_id = child_id
        detail = (
            str(cause) if isinstance(cause, StartupError) else f"{type(cause).__name__}: {cause}"
        )
        super().__init__(f"{child_id} failed to start: {detail}")


class RestartIntensityExceeded(EngineError):
    """More than ``max_restarts`` restarts within ``period_s``: the supervisor gives up
    and escalates to its parent (OTP's restart intensity)."""

    def __init__(
        self, supervisor: str, child_id: str, restarts: int, period_s: float, last_error: str
    ) -> None:
        self.supervisor = supervisor
        self.child_id = child_id
        super().__init__(
            f"supervisor {supervisor!r}: child {child_id!r} needed more than {restarts} "
            f"restarts within {period_s:g} s; escalating (last error: {last_error})"
        )


def find_startup_error(exc: BaseException) -> StartupError | None:
    """The first ``StartupError`` inside ``exc`` (which may be an exception group), or
    ``None``. Used by the CLI to print one clear line. Causes are not followed: a
    runtime failure caused by, say, a database that went away is not a start-up error."""
    return _find(exc, StartupError)


def find_escalation(exc: BaseException) -> RestartIntensityExceeded | None:
    return _find(exc, RestartIntensityExceeded)


def _find(exc: BaseException, kind: type[E]) -> E | None:
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None
