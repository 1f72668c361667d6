"""Every ``statistics()`` in the engine returns a frozen record (docs/conventions.md 3),
as trio's channels do: read from the source, so a new actor with a mutable statistics
class, or a ``.stats`` attribute beside it, fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("actors", "api", "engine")
# A counter per (edge, reason), copied into a plain dict: a one-field record would add
# nothing (api/prometheus.py adds the known reasons at 0).
NOT_RECORDS = {"Refusals": "dict"}


def _trees() -> dict[Path, ast.Module]:
    return {
        path: ast.parse(path.read_text(), str(path))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _frozen(node: ast.ClassDef) -> bool:
    """``@dataclass(frozen=True, ...)`` or ``class X(msgspec.Struct, frozen=True)``."""
    keywords = [k for d in node.decorator_list if isinstance(d, ast.Call) for k in d.keywords]
    keywords += node.keywords
    return any(
        k.arg == "frozen" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in keywords
    )


def test_every_statistics_method_returns_a_frozen_record() -> None:
    trees = _trees()
    classes = {
        node.name: node
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }
    returned: dict[str, str] = {}  # owner class -> the annotation of its statistics()
    for tree in trees.values():
        for owner in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for item in owner.body:
                if isinstance(item, ast.FunctionDef) and item.name == "statistics":
                    assert item.returns is not None, f"{owner.name}.statistics: no annotation"
                    returned[owner.name] = ast.unparse(item.returns)
    assert len(returned) >= 16  # the survey found 16; fewer means the walk broke
    for owner_name, annotation in returned.items():
        if owner_name in NOT_RECORDS:
            assert annotation.startswith(NOT_RECORDS[owner_name])
            continue
        assert annotation in classes, f"{owner_name}.statistics() returns {annotation}"
        assert _frozen(classes[annotation]), f"{owner_name}: {annotation} is not frozen"


def test_no_actor_keeps_its_statistics_in_a_public_stats_attribute() -> None:
    # (Observability.stats() is the /stats route's handler, a method returning a Response.)
    for path, tree in _trees().items():
        where = f"{path.relative_to(ROOT)}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    named = isinstance(target, ast.Attribute) and target.attr == "stats"
                    assert not named, f"{where}:{node.lineno}: .stats = ..."
            if isinstance(node, ast.FunctionDef) and node.name == "stats":
                decorators = [ast.unparse(d) for d in node.decorator_list]
                assert "property" not in decorators, f"{where}:{node.lineno}: a stats property"
