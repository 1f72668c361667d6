"""The README's configuration table, generated from the settings table.

``python -m engine.settings_doc`` prints it; ``python -m engine.settings_doc --update
README.md`` rewrites it in place, between its two marker comments. tests/test_config.py
checks that README.md holds exactly this table, so a setting added, renamed, given another
default or made secret in engine/settings_table.py shows in the README or fails the test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.settings_table import SETTINGS, Shown

BEGIN = (
    "<!-- The table below is generated from engine/settings_table.py: "
    "python -m engine.settings_doc --update README.md -->"
)
END = "<!-- end of the generated table -->"
SECRET_TEXT = {Shown.PLAIN: "", Shown.HIDDEN: "yes", Shown.MASKED: "password"}


def markdown_table() -> str:
    """Every setting an operator sets (not the ``internal`` ones), in the table's order."""
    lines = ["| variable | default | secret | meaning |", "|---|---|---|---|"]
    for row in SETTINGS:
        if row.internal:
            continue
        cells = (f"`{row.name}`", row.default_text, SECRET_TEXT[row.shown], row.doc)
        if any("|" in cell for cell in cells):
            raise ValueError(f"{row.name}: a '|' would split its row of the table")
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def with_table(document: str) -> str:
    """``document`` with the text between its markers replaced by ``markdown_table()``."""
    before, begin, rest = document.partition(BEGIN + "\n")
    _, end, after = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the markers are missing: {BEGIN!r} ... {END!r}")
    return f"{before}{BEGIN}\n{markdown_table()}{END}{after}"


def table_in(document: str) -> str:
    """The text between ``document``'s markers (``""`` when they are missing)."""
    _, begin, rest = document.partition(BEGIN + "\n")
    table, end, _ = rest.partition(END)
    return table if begin and end else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.settings_doc", description=__doc__)
    parser.add_argument(
        "--update", type=Path, metavar="FILE", help="rewrite the table inside FILE's markers"
    )
    args = parser.parse_args(argv)
    if args.update is None:
        sys.stdout.write(markdown_table())
        return 0
    path: Path = args.update
    path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
