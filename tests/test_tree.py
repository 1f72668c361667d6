"""The supervision tree's table (api/root/tree.py) and the mailbox table
(api/root/mailboxes.py): the engine is built from them, and docs/architecture.md shows
what they say."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from api.http.twilio_access import twilio_access
from api.http.vapi_calls import vapi_access
from api.root import architecture
from api.root.build import Tree, build_tree, load_prices
from api.root.database import EngineDatabase
from api.root.mailboxes import MAILBOXES, open_mailbox
from api.root.tree import TREE, child_specs, shutdown_deadline_s
from engine.admission import Admission
from engine.children import KILL_GRACE_S
from engine.config import settings_from_mapping
from engine.refusals import Refusals

if TYPE_CHECKING:
    import trio

    from engine.lifecycle import StopSignal

ALERTING = {
    "ALERT_WEBHOOK_URL": "http://127.0.0.1:9/alerts",
    "ALERT_EMAIL_RECIPIENT": "oncall@example.com",
    "SMTP_URL": "smtp://127.0.0.1:25",
}


async def _noop(stop: StopSignal, *, task_status: trio.TaskStatus[Any]) -> None:
    task_status.started()


def _built(env: dict[str, str]) -> Tree:
    settings = settings_from_mapping(env)
    return build_tree(
        settings,
        EngineDatabase("postgresql://afterhours@127.0.0.1:9/none", None),  # never opened
        load_prices(settings),
        Admission(),
        Refusals(),
        twilio_access(settings),
        vapi_access(settings),
        on_stopping=lambda: None,
    )


def test_the_architecture_doc_shows_what_the_tables_say() -> None:
    text = architecture.DOC.read_text(encoding="utf-8")
    for name, render in architecture.BLOCKS.items():
        assert architecture.generated_in(text, name) == render(), (
            f"docs/architecture.md's {name} block is stale: python -m api.root.architecture --write"
        )


def test_rewriting_replaces_only_what_lies_between_the_markers() -> None:
    stale = (
        "before\n<!-- generated: tree (x) -->\nold tree\n<!-- end: tree -->\nmiddle\n"
        "<!-- generated: children -->\n<!-- end: children -->\n"
        "<!-- generated: mailboxes -->\nold\nrows\n<!-- end: mailboxes -->\nafter\n"
    )
    fresh = architecture.rewrite(stale)
    assert fresh.startswith("before\n")
    assert fresh.endswith("\nafter\n")
    assert "\nmiddle\n" in fresh
    assert architecture.generated_in(fresh, "tree") == architecture.tree_block()
    assert architecture.generated_in(fresh, "mailboxes") == architecture.mailboxes_block()
    assert architecture.rewrite(fresh) == fresh
    with pytest.raises(ValueError, match="children"):
        architecture.rewrite(stale.replace("<!-- generated: children -->", ""))


async def test_the_engine_runs_the_tables_children_in_the_tables_order() -> None:
    simulated = _built({})
    assert [c.id for c in simulated.supervisor.statistics().children] == [c.name for c in TREE]
    with_openai = _built({"OPENAI_API_KEY": "sk-test"})
    assert [c.id for c in with_openai.supervisor.statistics().children] == [
        c.name for c in TREE if c.name != "model-simulator"
    ]


async def test_the_engine_opens_exactly_the_tables_mailboxes() -> None:
    tree = _built(ALERTING)
    built = {(box.name, box.capacity, box.policy) for box in tree.mailboxes}
    expected = set()
    for row in MAILBOXES:
        names = ["alerts-webhook", "alerts-email"] if row.per_channel else [row.name]
        expected |= {(name, row.capacity, row.policy) for name in names}
    assert built == expected


def test_specs_follow_the_table_and_refuse_a_gap_or_a_stranger() -> None:
    runs = {child.name: _noop for child in TREE if child.only_when is None}
    specs = child_specs(runs)
    assert [(s.id, s.restart, s.shutdown_s) for s in specs] == [
        (c.name, c.restart, c.shutdown_s) for c in TREE if c.only_when is None
    ]
    with pytest.raises(ValueError, match="'store' has no run function"):
        child_specs({name: fn for name, fn in runs.items() if name != "store"})
    with pytest.raises(ValueError, match="no row in the tree for \\['cache'\\]"):
        child_specs({**runs, "cache": _noop})


def test_a_root_mailbox_row_opens_as_described_and_a_channel_row_does_not() -> None:
    for row in MAILBOXES:
        if row.per_channel:
            with pytest.raises(ValueError, match="alert channel"):
                open_mailbox(row)
            continue
        box = open_mailbox(row)
        assert (box.name, box.capacity, box.policy) == (row.name, row.capacity, row.policy)


async def test_the_watchdog_deadline_covers_the_drain_and_a_stop_that_spends_every_budget() -> None:
    tree = _built({})
    drain_s = 30.0
    # The supervisor stops its children one at a time: the worst case is every budget in
    # full, then every kill grace, after the drain.
    specs = tree.supervisor._specs
    worst_s = drain_s + sum(spec.shutdown_s + KILL_GRACE_S for spec in specs)
    assert shutdown_deadline_s(drain_s) > worst_s
    assert shutdown_deadline_s(300) - shutdown_deadline_s(5) == 295
