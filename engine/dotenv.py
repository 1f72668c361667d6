"""A small dotenv reader: pure parsing, plus the one file read.

Syntax: ``KEY=value`` lines, an optional ``export`` prefix, ``#`` comments, blank lines,
values optionally in single or double quotes (no escape sequences). In an unquoted value
a ``#`` at its start or after whitespace begins a comment. Which keys are allowed is the
configuration's business, not this module's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import ConfigError, StartupError

if TYPE_CHECKING:
    from pathlib import Path

_ASSIGNMENT = re.compile(r"(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=(?P<value>.*)")
_UNQUOTED_COMMENT = re.compile(r"(?:^|\s)#")


@dataclass(frozen=True, slots=True)
class Assignment:
    key: str
    value: str
    lineno: int


def parse_env_file(path: Path) -> list[Assignment]:
    """The assignments in ``path`` in file order; ``[]`` when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise StartupError(f"cannot read env file {path}: {reason}") from exc
    return parse_env_text(text, source=str(path))


def parse_env_text(text: str, *, source: str) -> list[Assignment]:
    assignments = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ASSIGNMENT.fullmatch(stripped)
        value = None if match is None else _unquote(match["value"].strip())
        if match is None or value is None:
            # The line is not shown: it may hold a secret with a typo in its syntax.
            raise ConfigError(
                f"{source}:{lineno}",
                None,
                "expected KEY=value (optionally prefixed by 'export ', value optionally in "
                "matching single or double quotes), a # comment or a blank line",
            )
        assignments.append(Assignment(match["key"], value, lineno))
    return assignments


def _unquote(value: str) -> str | None:
    """The value without quotes or trailing comment; ``None`` when a quote is unclosed
    or text follows the closing quote."""
    if value[:1] in ("'", '"'):
        end = value.find(value[0], 1)
        if end == -1:
            return None
        rest = value[end + 1 :].strip()
        return value[1:end] if not rest or rest.startswith("#") else None
    return _UNQUOTED_COMMENT.split(value, maxsplit=1)[0].strip()
