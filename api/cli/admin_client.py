"""The admin CLI's HTTP client: the running engine's admin API over urllib (no Trio, no
httpx: a command that reads one record must start in a fraction of a second).

The engine's URL comes from ``--url`` or HOST/PORT; the token from ADMIN_TOKEN or the
one the engine generated in DATA_DIR. The token is sent, never printed. A token the engine
refuses (401/403) is said as such, with where the CLI took it from, whatever the command:
read as "HTTP 404" or "no record found", a wrong token sends the operator after records
that exist.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.config import Settings

REQUEST_TIMEOUT_S = 15.0


class CliError(Exception):
    """One line for the operator, then exit 1."""


@dataclass(frozen=True)
class AdminClient:
    base_url: str
    token: str
    # Where the token came from (a variable or a file, never the token): said when refused.
    taken_from: str = "ADMIN_TOKEN"

    def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        # Imported here, not at the top: `afterhours --help` builds the admin commands'
        # parser from this package and must not pay for urllib's HTTP stack (~35 ms).
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the operator's own engine URL
            self.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:  # noqa: S310
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise CliError(refused_token(self.base_url, exc.code, self.taken_from)) from None
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(
                f"cannot reach the engine at {self.base_url} ({exc}): is `afterhours serve` "
                "running? (or pass --url)"
            ) from exc

    def expect(self, statuses: tuple[int, ...], method: str, path: str, body: object = None) -> Any:
        status, answer = self.call(method, path, body)
        if status in statuses:
            return answer
        raise CliError(describe_failure(status, answer))


def describe_failure(
    status: int, answer: Any, field_name: Callable[[str], str] = lambda field: field
) -> str:
    """One message for a refused request; ``field_name`` renames the fields it names (as
    the operator's file names them)."""
    if isinstance(answer, dict) and answer.get("fields"):
        lines = [f"  {field_name(item['field'])}: {item['message']}" for item in answer["fields"]]
        return "invalid:\n" + "\n".join(lines)
    message = answer.get("error") if isinstance(answer, dict) else answer
    return f"HTTP {status}: {message}"


def refused_token(base_url: str, status: int, source: str) -> str:
    return (
        f"the engine at {base_url} refused the admin token (HTTP {status}): it is not this "
        f"engine's ADMIN_TOKEN. It was taken from {source}; set ADMIN_TOKEN to the engine's "
        "token (or pass the --url of the engine it belongs to)"
    )


def token_source(settings: Settings, environ: dict[str, str] | None = None) -> str:
    """Where ``afterhours`` takes the admin token from (load_settings' order: the
    environment, then .env, then the token the engine generated in DATA_DIR)."""
    environ = dict(os.environ) if environ is None else environ
    if settings.admin_token is None:
        return str(settings.data_dir / "admin_token")
    if environ.get("ADMIN_TOKEN", "").strip():
        return "ADMIN_TOKEN in the environment"
    return "ADMIN_TOKEN in ./.env"


def client_for(url: str | None, settings: Settings) -> AdminClient:
    return AdminClient(_base_url(url, settings), _token(settings), token_source(settings))


def _base_url(url: str | None, settings: Settings) -> str:
    if url:
        return url.rstrip("/")
    if settings.port == 0:
        raise CliError("PORT is 0 (any free port): pass the engine's --url")
    return f"http://{settings.host}:{settings.port}"


def _token(settings: Settings) -> str:
    if settings.admin_token:
        return settings.admin_token.reveal()
    stored = settings.data_dir / "admin_token"
    try:
        return stored.read_text().strip()
    except OSError:
        raise CliError(f"no ADMIN_TOKEN: set it, or run where the engine keeps {stored}") from None
