"""What an operator wires the engine into (issue 17's conventions): the read-only metrics
token, counters exported at 0 before their first event, the shipped Prometheus, alert
rule and Grafana files checked against a real engine's /metrics, the access log, and
the systemd unit."""

from __future__ import annotations

import ast
import configparser
import json
import logging
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from actors.call.errors import ErrorClass
from api.cli.main import EXIT_BAD_CONFIG
from api.http.app import ROUTE_GROUPS
from engine.config import read_env_file
from engine.refusals import KNOWN_REASONS
from tests.helpers import ADMIN_TOKEN, http_request, running_engine, wait_until
from tests.test_twilio_webhooks import setup_project

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "docs" / "deploy"
METRICS_TOKEN = "m" * 32
# Labels Prometheus adds to every series at scrape time, and its own `up` series: they are
# not in the engine's output.
TARGET_LABELS = {"instance", "job"}
PROMETHEUS_OWN = {"up"}

Samples = list[tuple[str, dict[str, str]]]


async def scrape(base: str, token: str = ADMIN_TOKEN) -> Samples:
    response = await http_request("GET", f"{base}/metrics", token=token)
    assert response.status == 200
    return [
        (sample.name, dict(sample.labels))
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    ]


def values(samples: Samples, name: str, label: str) -> set[str]:
    return {labels[label] for sample, labels in samples if sample == name and label in labels}


# -- 1. the metrics token ---------------------------------------------------------------


async def test_the_metrics_token_opens_metrics_and_nothing_else(
    fresh_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_engine(fresh_database, tmp_path, METRICS_TOKEN=METRICS_TOKEN) as engine:
        base = engine.bound_urls[0]
        by_metrics = await http_request("GET", f"{base}/metrics", token=METRICS_TOKEN)
        by_admin = await http_request("GET", f"{base}/metrics", token=ADMIN_TOKEN)
        anonymous = await http_request("GET", f"{base}/metrics")
        wrong = await http_request("GET", f"{base}/metrics", token=METRICS_TOKEN[:-1] + "x")
        elsewhere = {
            path: await http_request(method, f"{base}{path}", token=METRICS_TOKEN)
            for method, path in [
                ("GET", "/stats"),
                ("GET", "/admin/projects"),
                ("DELETE", "/admin/projects/smith-plumbing"),
                ("GET", "/analytics/project/smith-plumbing"),
                ("GET", "/analytics/project/smith-plumbing/statistics"),
            ]
        }
        health = await http_request("GET", f"{base}/health/detailed", token=METRICS_TOKEN)
        plain_health = await http_request("GET", f"{base}/health/detailed")
    assert (by_metrics.status, by_admin.status) == (200, 200)
    assert by_metrics.body.startswith(b"# HELP afterhours_")
    assert (anonymous.status, wrong.status) == (401, 401)
    assert "METRICS_TOKEN" in anonymous.json()["error"]
    assert {path: r.status for path, r in elsewhere.items()} == dict.fromkeys(elsewhere, 401)
    # Not the admin's view of the health either: the same as a stranger's, no error texts.
    assert health.json()["services"].keys() == plain_health.json()["services"].keys()
    assert "error" not in health.json()["services"]["database"]
    assert METRICS_TOKEN.encode() not in health.body
    assert METRICS_TOKEN not in caplog.text


# -- 2. counters at 0 before their first event --------------------------------------------


async def test_a_fresh_engine_exports_every_known_label_set_at_zero(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0]
        await setup_project(engine)

        async def project_known() -> Samples:
            found = await scrape(base)
            return (
                found
                if "smith-plumbing" in values(found, "afterhours_calls_total", "project")
                else []
            )

        found = await wait_until(project_known, timeout_s=10)
        actors = [child.id for child in engine.supervisor.statistics().children]
        text = (await http_request("GET", f"{base}/metrics", token=ADMIN_TOKEN)).body.decode()
    zero = {(name, tuple(sorted(labels.items()))) for name, labels in found}

    def has(name: str, **labels: str) -> bool:
        return (name, tuple(sorted(labels.items()))) in zero

    for status in ("completed", "missed", "failed"):
        assert has("afterhours_calls_total", project="smith-plumbing", status=status)
    assert has("afterhours_calls_started_total", project="smith-plumbing")
    for outcome in ("ok", "error", "timeout", "cancelled"):
        assert has("afterhours_function_calls_total", project="smith-plumbing", outcome=outcome)
    assert values(found, "afterhours_model_connections_total", "outcome") == {"ok", "failed"}
    classes = {c.value for c in ErrorClass} | {"failed_response"}
    assert values(found, "afterhours_model_error_events_total", "class") == classes
    kinds = values(found, "afterhours_high_error_rate_alerts_total", "kind")
    assert kinds == {"calls", "function_calls"}
    assert values(found, "afterhours_alerts_total", "level") == {
        "info", "warning", "error", "critical",
    }  # fmt: skip
    assert set(actors) <= values(found, "afterhours_actor_restarts_total", "actor")
    assert "store" in actors
    for edge, reasons in KNOWN_REASONS.items():
        for reason in reasons:
            assert has("afterhours_refusals_total", edge=edge, reason=reason), (edge, reason)
    for route in ROUTE_GROUPS:
        assert has("afterhours_http_requests_total", route=route, code="500")
    # And at 0 indeed: nothing has failed on a fresh engine.
    for line in (
        'afterhours_calls_total{project="smith-plumbing",status="failed"} 0',
        'afterhours_model_connections_total{outcome="failed"} 0',
        'afterhours_model_error_events_total{class="fatal"} 0',
        'afterhours_high_error_rate_alerts_total{kind="calls"} 0',
        'afterhours_actor_restarts_total{actor="store"} 0',
        'afterhours_refusals_total{edge="voice",reason="bad_signature"} 0',
        'afterhours_refusals_total{edge="media",reason="bad_token"} 0',
        'afterhours_http_requests_total{route="/twilio",code="500"} 0',
    ):
        assert line in text.splitlines(), line


def test_every_refusal_reason_the_code_spells_out_is_known() -> None:
    """Each string literal handed to ``refuse(edge, reason)`` or an edge's ``_refuse``
    is in ``KNOWN_REASONS`` (for that edge where the call names it), so it has a series
    at 0 before its first refusal. Reasons computed at run time are in the docs' tables,
    from which ``KNOWN_REASONS`` was written."""
    known_anywhere = {reason for reasons in KNOWN_REASONS.values() for reason in reasons}
    found: list[tuple[str | None, str]] = []
    for path in sorted((ROOT / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            args = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
            if node.func.attr == "refuse" and len(args) == 2:  # refusals.refuse(edge, reason)
                edge, reason = args
            elif node.func.attr == "_refuse" and args:  # an edge's own: (edge,) reason, ...
                edge, reason = (args[0], args[1]) if args[0] in KNOWN_REASONS else (None, args[0])
            else:
                continue
            if isinstance(reason, str):
                found.append((edge if isinstance(edge, str) else None, reason))
    assert len(found) >= 12  # the scan does find them
    for edge, reason in found:
        if edge is not None:
            assert reason in KNOWN_REASONS[edge], (edge, reason)
        else:
            assert reason in known_anywhere, reason


# -- 3. the shipped Prometheus, rule and Grafana files ------------------------------------

_SELECTOR = re.compile(r"\b(afterhours_[a-z0-9_]+|up)\b(\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _rules() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "afterhours-alerts.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            expressions.append(variable["query"]["query"])
    return expressions


def test_the_alert_rules_have_prometheus_rule_structure() -> None:
    rules = _rules()
    assert set(rules) == {"groups"}
    names = []
    for group in rules["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        assert isinstance(group["name"], str)
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert isinstance(rule["alert"], str)
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert isinstance(rule["expr"], str)
            assert rule["expr"].count("(") == rule["expr"].count(")")
            if "for" in rule:
                assert re.fullmatch(r"[0-9]+[smhdwy]", rule["for"])
            assert rule["labels"]["severity"] in ("critical", "warning")
            assert {"summary", "description"} <= set(rule["annotations"])
            names.append(rule["alert"])
    assert len(names) == len(set(names)) >= 10


def test_the_scrape_config_reads_every_worker_with_the_metrics_token() -> None:
    """prometheus.yml scrapes each worker's own port (PORT + 100 + index) of the unit's
    ``--workers N`` and the env example's PORT, with a token from a file."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["afterhours-alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert set(job["authorization"]) == {"type", "credentials_file"}  # no token inline
    env = read_env_file(DEPLOY / "afterhours.env.example")
    command = shlex.split(_unit()["Service"]["ExecStart"])
    workers = int(command[command.index("--workers") + 1])
    port = int(env["PORT"])
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    expected = [f"{env['HOST']}:{port + 100 + index}" for index in range(workers)]
    assert targets == expected
    assert "METRICS_TOKEN" in env


async def test_the_rules_and_the_dashboard_use_what_a_real_engine_exports(
    fresh_database: str, tmp_path: Path
) -> None:
    expressions = [rule["expr"] for g in _rules()["groups"] for rule in g["rules"]]
    expressions += _dashboard_expressions()
    # An alert channel, so that its delivery counters exist (none is sent: nothing fails).
    webhook = {"ALERT_WEBHOOK_URL": "http://127.0.0.1:9/alerts"}
    async with running_engine(
        fresh_database, tmp_path, METRICS_TOKEN=METRICS_TOKEN, **webhook
    ) as engine:
        base = engine.bound_urls[0]
        await setup_project(engine)  # the per-project series exist once a project does

        async def with_project() -> Samples:
            found = await scrape(base, METRICS_TOKEN)
            return (
                found
                if "smith-plumbing" in values(found, "afterhours_calls_total", "project")
                else []
            )

        found = await wait_until(with_project, timeout_s=10)
    by_name: dict[str, list[dict[str, str]]] = {}
    for name, labels in found:
        by_name.setdefault(name, []).append(labels)
    used = 0
    for expression in expressions:
        for name, braces in _SELECTOR.findall(expression):
            if name in PROMETHEUS_OWN:
                continue
            used += 1
            assert name in by_name, f"{name} (in {expression!r}) is not in /metrics"
            for label, operator, value in _MATCHER.findall(braces):
                if label in TARGET_LABELS:
                    continue
                shown = {labels[label] for labels in by_name[name] if label in labels}
                assert shown, f"{name} has no label {label}"
                if operator == "=":
                    assert value in shown, f'{name}{{{label}="{value}"}} is not exported'
                elif operator == "=~":
                    assert any(re.fullmatch(value, v) for v in shown), (name, label, value)
    assert used > 30


# -- 5. the access log ----------------------------------------------------------------------


async def test_each_request_is_one_access_line_without_its_query_or_token(
    fresh_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="afterhours.access")
    query_secret = "querysecret0123456789"
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0]
        caplog.clear()
        given = await http_request(
            "GET",
            f"{base}/metrics?token={query_secret}&x=1",
            token=ADMIN_TOKEN,
            headers={"X-Request-Id": "req-42.abc"},
        )
        # A hostile id is not echoed: the client cannot write what it likes in our log.
        hostile = await http_request(
            "GET", f"{base}/health", headers={"X-Request-Id": "evil id\x1b[31m" + "x" * 80}
        )
        missing = await http_request("GET", f"{base}/nowhere")
    lines = [r.getMessage() for r in caplog.records if r.name == "afterhours.access"]
    assert given.headers["x-request-id"] == "req-42.abc"
    assert re.fullmatch(r"[0-9a-f]{16}", hostile.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{16}", missing.headers["x-request-id"])
    assert len(lines) == 3, lines
    assert re.fullmatch(
        r"GET /metrics \(query: \d+ chars\) 200 \d+\.\dms id=req-42\.abc", lines[0]
    ), lines[0]
    assert re.fullmatch(
        rf"GET /health 200 \d+\.\dms id={hostile.headers['x-request-id']}", lines[1]
    )
    assert lines[2].startswith("GET /nowhere 404 ")
    logged = "\n".join(lines) + caplog.text
    assert query_secret not in logged
    assert ADMIN_TOKEN not in logged
    assert "evil" not in logged


# -- 6. the systemd unit --------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read_string((DEPLOY / "afterhours.service").read_text(encoding="utf-8"))
    return unit


def test_the_systemd_unit_reads_the_settings_once_and_does_not_loop_on_a_bad_one() -> None:
    service = _unit()["Service"]
    command = shlex.split(service["ExecStart"])
    # One reading of the settings: the engine's own --env-file, not systemd's as well.
    assert "EnvironmentFile" not in service
    assert command[command.index("--env-file") + 1] == "/etc/afterhours/afterhours.env"
    # Exit 2 is a bad setting (api/cli/main.py): restarting cannot fix it.
    assert service["Restart"] == "on-failure"
    assert str(EXIT_BAD_CONFIG) in service["RestartPreventExitStatus"].split()
    env = read_env_file(DEPLOY / "afterhours.env.example")
    assert service["ReadWritePaths"] == env["DATA_DIR"] == service["WorkingDirectory"]


def test_the_systemd_unit_is_hardened() -> None:
    service = _unit()["Service"]
    expected = {
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "PrivateTmp": "true",
        "PrivateDevices": "true",
        "ProtectKernelTunables": "true",
        "ProtectKernelModules": "true",
        "ProtectKernelLogs": "true",
        "ProtectControlGroups": "true",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "LockPersonality": "true",
        "MemoryDenyWriteExecute": "true",
        "SystemCallFilter": "@system-service",
        "CapabilityBoundingSet": "",  # the engine runs as its own user: no capability
        "AmbientCapabilities": "",
        "User": "afterhours",
    }
    assert {key: service.get(key) for key in expected} == expected
