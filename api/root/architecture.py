"""docs/architecture.md's tree, child table and mailbox table, rendered from the tables.

``python -m api.root.architecture`` prints the three blocks; ``--write`` puts them into
docs/architecture.md between their ``<!-- generated: NAME -->`` and
``<!-- end: NAME -->`` markers (tests/test_tree.py checks that the file holds what this
renders, so the map cannot drift from the code).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from actors.call import STOP_BUDGET_S
from api.root.mailboxes import MAILBOXES
from api.root.tree import ROOT_INTENSITY, ROOT_NAME, TREE
from engine.children import KILL_GRACE_S

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def tree_block() -> str:
    width = max(len(child.name) for child in TREE)
    lines = [
        f"{ROOT_NAME}  (Supervisor, one_for_one, intensity {ROOT_INTENSITY.max_restarts} "
        f"restarts in {ROOT_INTENSITY.period_s:g} s)",
        "|",
    ]
    for child in TREE:
        condition = f" (only {child.only_when})" if child.only_when else ""
        lines.append(
            f"+-- {child.name:<{width}}  {child.restart.value:<9}  {child.runs}: "
            f"{child.role}{condition}"
        )
    return "```\n" + "\n".join(lines) + "\n```"


def children_block() -> str:
    rows = [
        "| child (start order) | runs | restart | shutdown budget | started means |",
        "|---|---|---|---|---|",
    ]
    for child in TREE:
        budget = f"{child.shutdown_s:g} s" + (
            f" ({child.budget_note})" if child.budget_note else ""
        )
        name = f"{child.name} (only {child.only_when})" if child.only_when else child.name
        rows.append(
            f"| {name} | {child.runs} | {child.restart.value} | {budget} | {child.started_means} |"
        )
    rows.append("")
    rows.append(
        f"Each budget is followed, if the child has to be cancelled, by `KILL_GRACE_S` "
        f"({KILL_GRACE_S:g} s) for its bounded cleanup. Each call, a child of `calls`, is "
        f"temporary, with `STOP_BUDGET_S` ({STOP_BUDGET_S:g} s) to stop; it reports started "
        f"at once and its model connection follows."
    )
    return "\n".join(rows)


def mailboxes_block() -> str:
    rows = [
        "| mailbox | read by | size | overflow policy | messages in (from) | messages out |",
        "|---|---|---|---|---|---|",
    ]
    for box in MAILBOXES:
        name = f"`{box.name}`" + (" (one per configured channel)" if box.per_channel else "")
        rows.append(
            f"| {name} | {box.reader} | {box.capacity} | {box.policy.name}: {box.why} | "
            f"{box.messages_in} | {box.messages_out} |"
        )
    return "\n".join(rows)


BLOCKS = {"tree": tree_block, "children": children_block, "mailboxes": mailboxes_block}


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- generated: {name} .*?-->\n)(.*?)(<!-- end: {name} -->)", re.DOTALL)


def generated_in(text: str, name: str) -> str | None:
    """What the document holds between a block's markers (None: no markers)."""
    found = _pattern(name).search(text)
    return None if found is None else found.group(2).removesuffix("\n")


def rewrite(text: str) -> str:
    for name, render in BLOCKS.items():
        if generated_in(text, name) is None:
            raise ValueError(f"no <!-- generated: {name} --> marker in the document")
        found = _pattern(name).search(text)
        assert found is not None
        text = text[: found.start(2)] + render() + "\n" + text[found.end(2) :]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {DOC}")
    args = parser.parse_args(argv)
    if args.write:
        DOC.write_text(rewrite(DOC.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    for name, render in BLOCKS.items():
        print(f"<!-- {name} -->\n{render()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
