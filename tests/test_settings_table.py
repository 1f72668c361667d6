"""The settings table: it matches ``Settings``, it decides what is secret, and the
README's configuration table is generated from it."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path

import pytest

from engine.config import Secret, Settings, settings_from_mapping
from engine.errors import ConfigError
from engine.settings_doc import BEGIN, END, main, markdown_table, table_in, with_table
from engine.settings_table import SETTINGS, Shown
from engine.simulator.faults import Faults
from tests.test_config import FULL

README = Path(__file__).parents[1] / "README.md"
_HINTS = typing.get_type_hints(Settings, localns={"Path": Path, "Faults": Faults})


def _rows(markdown: str) -> dict[str, list[str]]:
    """The table's rows by variable: [default, secret, meaning]."""
    rows = {}
    for line in markdown.splitlines():
        match = re.fullmatch(r"\| `([A-Z_]+)` \| (.*) \|", line)
        if match:
            rows[match[1]] = [cell.strip() for cell in match[2].split(" | ")]
    return rows


def _holds(value: object, hint: object) -> bool:
    """True when ``value`` is of the annotated type ``hint`` (classes, ``X | None``,
    ``Literal``): what mypy cannot check through the table's ``Any``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_holds(value, arm) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    assert isinstance(hint, type), hint
    # bool is an int, and an int where a float is declared would print as "30", not "30.0"
    return type(value) is hint or (hint is Path and isinstance(value, Path))


def test_the_rows_are_the_settings_fields_in_order() -> None:
    assert [row.field for row in SETTINGS] == [field.name for field in dataclasses.fields(Settings)]


@pytest.mark.parametrize("values", [{}, FULL], ids=["defaults", "every-variable-set"])
def test_every_parsed_value_has_its_fields_type(values: dict[str, str]) -> None:
    settings = settings_from_mapping(values)
    wrong = {
        field: type(getattr(settings, field)).__name__
        for field, hint in _HINTS.items()
        if not _holds(getattr(settings, field), hint)
    }
    assert wrong == {}


def test_secrets_are_exactly_the_secret_fields() -> None:
    """A Secret field whose row is not hidden would have its failures shown in errors;
    a hidden row that is not a Secret would be shown by repr."""
    hidden = {row.field for row in SETTINGS if row.shown is Shown.HIDDEN}
    secret_fields = {field for field, hint in _HINTS.items() if Secret in typing.get_args(hint)}
    assert hidden == secret_fields
    assert {row.name for row in SETTINGS if row.shown is Shown.MASKED} == {
        "DATABASE_URL",
        "SMTP_URL",
        "ALERT_WEBHOOK_URL",
    }


@pytest.mark.parametrize(
    "name", [row.name for row in SETTINGS if row.shown is Shown.MASKED], ids=str
)
def test_a_masked_urls_password_stays_out_of_its_error(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({name: "ftp://user:pw-in-the-url@host.test/x"})  # bad scheme
    assert caught.value.variable == name
    assert "pw-in-the-url" not in str(caught.value)
    assert "user:***@host.test" in str(caught.value)


def test_a_row_check_sees_the_rows_above_it() -> None:
    """WORKERS' check reads PORT and MEDIA_PORT, parsed before it."""
    for fixed_port_missing in ({"PORT": "0"}, {"MEDIA_PORT": "0"}, {"MEDIA_PORT": "00"}):
        with pytest.raises(ConfigError) as caught:
            settings_from_mapping({"WORKERS": "2", **fixed_port_missing})
        assert str(caught.value) == (
            "invalid WORKERS='2': several workers share fixed ports: set PORT and MEDIA_PORT"
        )
    assert settings_from_mapping({"WORKERS": "2", "WORKER_INDEX": "1"}).worker_index == 1
    assert settings_from_mapping({"PORT": "0"}).workers == 1  # one worker: any port


def test_the_readme_table_is_the_generated_one() -> None:
    """Regenerate it with `python -m engine.settings_doc --update README.md`."""
    assert table_in(README.read_text(encoding="utf-8")) == markdown_table()


def test_the_generated_table_lists_every_setting_an_operator_sets() -> None:
    rows = _rows(markdown_table())
    # WORKER_INDEX is set by `serve --workers` for each worker, never by an operator.
    assert list(rows) == [row.name for row in SETTINGS if row.name != "WORKER_INDEX"]
    assert rows["DRAIN_TIMEOUT_S"][:2] == ["`30`", ""]
    assert rows["ADMIN_TOKEN"][:2] == ["generated when local", "yes"]
    assert rows["DATABASE_URL"][:2] == ["unset: embedded PostgreSQL", "password"]
    assert rows["OPENAI_API_KEY"][:2] == ["unset", "yes"]


def test_with_table_replaces_only_what_is_between_the_markers() -> None:
    document = f"# Title\n\nintro\n\n{BEGIN}\n| stale |\n{END}\n\nafter\n"
    updated = with_table(document)
    assert updated == f"# Title\n\nintro\n\n{BEGIN}\n{markdown_table()}{END}\n\nafter\n"
    assert with_table(updated) == updated
    with pytest.raises(ValueError, match="markers are missing"):
        with_table("# no markers here\n")


def test_update_rewrites_the_file(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text(f"before\n{BEGIN}\n| old |\n{END}\nafter\n", encoding="utf-8")
    assert main(["--update", str(path)]) == 0
    assert table_in(path.read_text(encoding="utf-8")) == markdown_table()
    assert path.read_text(encoding="utf-8").startswith("before\n")
