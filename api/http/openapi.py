"""``GET /openapi.json``: an OpenAPI 3.1 description of every public HTTP route.

The document is data, written here by hand; ``tests/test_openapi.py`` keeps it true: the
set of operations must equal the routes the application serves (``App.routes()``), and
each must answer on a running engine.
"""

from __future__ import annotations

from typing import Any

_ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]
_READ: list[dict[str, list[str]]] = [{"adminToken": []}, {"projectKey": []}]


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _responses(*codes: int) -> dict[str, Any]:
    texts = {
        200: "OK",
        201: "Created",
        204: "Done, no body",
        400: "A parameter is invalid (the body names it in `field`)",
        401: "Missing or wrong token",
        403: "The key reads another project, or a bad Twilio signature",
        404: "Unknown resource",
        405: "Wrong method",
        409: "Already exists",
        413: "The body is too large (16 KiB for Twilio's webhooks, 4 MiB for Vapi's "
        "messages, 1 MiB elsewhere)",
        422: "Invalid body (one message per field)",
        429: "Too many requests for this key (see the Retry-After header)",
        503: "Unavailable (database away, too many reads waiting: see Retry-After, or draining)",
    }
    return {str(code): {"description": texts[code]} for code in codes}


_PROJECT = _path_parameter("projectId", "the project's id")
_WINDOW = [
    _query(
        "from",
        "first local day (YYYY-MM-DD) or an RFC 3339 timestamp; default 29 days before today",
    ),
    _query("to", "last local day (inclusive) or an RFC 3339 timestamp; default today"),
]


def _operation(summary: str, security: list[Any] | None, *codes: int, **extra: Any) -> Any:
    operation: dict[str, Any] = {"summary": summary, "responses": _responses(*codes)}
    operation["security"] = security if security is not None else []
    operation.update(extra)
    return operation


def document() -> dict[str, Any]:
    project_id = _path_parameter("id", "the project's id")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "afterhours",
            "version": "1",
            "description": "The after-hours phone engine: health, monitoring, analytics, "
            "administration and Twilio's webhooks. Twilio's media stream is a WebSocket on "
            "its own port (MEDIA_PORT, path /twilio/media, signed upgrade), which OpenAPI "
            "does not describe.",
        },
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "ADMIN_TOKEN: every route, every project",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "METRICS_TOKEN: GET /metrics only (read-only, for Prometheus)",
                },
                "projectKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a project's API key: its analytics only",
                },
                "twilioSignature": {"type": "apiKey", "in": "header", "name": "X-Twilio-Signature"},
                "vapiSecret": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-vapi-secret",
                    "description": "VAPI_SERVER_SECRET, as Vapi sends it",
                },
            }
        },
        "paths": {
            "/health": {"get": _operation("Quick health for load balancers", None, 200, 503)},
            "/health/detailed": {
                "get": _operation(
                    "Database, model, Twilio and server status; the error texts only with "
                    "the admin token",
                    [{}, {"adminToken": []}],  # optional: the token adds details
                    200,
                    503,
                )
            },
            "/metrics": {
                "get": _operation(
                    "Prometheus metrics (text format)",
                    [*_ADMIN, {"metricsToken": []}],
                    200,
                    401,
                )
            },
            "/stats": {"get": _operation("The engine's own statistics", _ADMIN, 200, 401)},
            "/openapi.json": {"get": _operation("This document", None, 200)},
            "/dashboard": {
                "get": _operation(
                    "The operator's web page (signs in with a token, reads the analytics API)",
                    None,
                    200,
                )
            },
            "/analytics/project/{projectId}": {
                "get": _operation(
                    "Summary of a project's calls over a window",
                    _READ,
                    200,
                    400,
                    401,
                    403,
                    404,
                    429,
                    503,
                    parameters=[_PROJECT, *_WINDOW],
                )
            },
            "/analytics/project/{projectId}/recent": {
                "get": _operation(
                    "The latest calls, newest first, paged by cursor",
                    _READ,
                    200,
                    400,
                    401,
                    403,
                    404,
                    429,
                    503,
                    parameters=[
                        _PROJECT,
                        _query("limit", "1 to 100, default 20", pattern="^[0-9]+$"),
                        _query("cursor", "nextCursor from the previous page"),
                    ],
                )
            },
            "/analytics/project/{projectId}/statistics": {
                "get": _operation(
                    "Per local day: counts by status and intent, durations, cost",
                    _READ,
                    200,
                    400,
                    401,
                    403,
                    404,
                    429,
                    503,
                    parameters=[
                        _PROJECT,
                        _query("start", "first local day, YYYY-MM-DD", format="date"),
                        _query("end", "last local day (inclusive), YYYY-MM-DD", format="date"),
                    ],
                )
            },
            "/analytics/project/{projectId}/calls/{callSid}": {
                "get": _operation(
                    "One call: its record, full transcript and function calls (404 for a "
                    "call of another project)",
                    _READ,
                    200,
                    400,
                    401,
                    403,
                    404,
                    429,
                    503,
                    parameters=[_PROJECT, _path_parameter("callSid", "Twilio's CallSid")],
                )
            },
            "/admin/projects": {
                "get": _operation("List projects", _ADMIN, 200, 401),
                "post": _operation("Create a project", _ADMIN, 201, 401, 409, 422),
            },
            "/admin/projects/{id}": {
                "parameters": [project_id],
                "get": _operation("Read a project", _ADMIN, 200, 401, 404),
                "put": _operation("Create or replace a project", _ADMIN, 200, 201, 401, 422),
                "patch": _operation("Change some fields", _ADMIN, 200, 401, 404, 422),
                "delete": _operation(
                    "Delete a project, its numbers and keys", _ADMIN, 204, 401, 404
                ),
            },
            "/admin/projects/{id}/phone-numbers": {
                "parameters": [project_id],
                "post": _operation("Add a phone number", _ADMIN, 201, 401, 404, 409, 422),
            },
            "/admin/projects/{id}/api-keys": {
                "parameters": [project_id],
                "post": _operation("Create an analytics key (shown once)", _ADMIN, 201, 401, 404),
                "get": _operation(
                    "A project's keys: id, name, created_at, revoked_at (never a hash)",
                    _ADMIN,
                    200,
                    401,
                    404,
                ),
            },
            "/admin/phone-numbers": {
                "get": _operation(
                    "Every phone number with its project, system and Vapi ids",
                    _ADMIN,
                    200,
                    400,
                    401,
                    404,
                    parameters=[_query("project", "only this project's numbers")],
                ),
            },
            "/admin/phone-numbers/{number}": {
                "parameters": [_path_parameter("number", "E.164, e.g. +15550001111")],
                "patch": _operation(
                    "Change a number's system (openai or vapi) and Vapi ids",
                    _ADMIN,
                    200,
                    401,
                    404,
                    422,
                ),
                "delete": _operation("Release a number", _ADMIN, 204, 401, 404),
            },
            "/admin/api-keys/{key_id}": {
                "parameters": [_path_parameter("key_id", "the key's id")],
                "delete": _operation("Revoke a key", _ADMIN, 204, 401, 404),
            },
            "/admin/calls/{call_sid}": {
                "parameters": [_path_parameter("call_sid", "Twilio's CallSid")],
                "get": _operation(
                    "One call's record with its function calls", _ADMIN, 200, 401, 404
                ),
            },
            "/twilio/voice": {
                "post": _operation(
                    "Twilio's incoming-call webhook: answers TwiML",
                    [{"twilioSignature": []}],
                    200,
                    400,
                    403,
                    413,
                )
            },
            "/vapi/events": {
                "post": _operation(
                    "Vapi's server messages: end-of-call-report and status-update recorded, "
                    "informational types acknowledged (204), others refused (422)",
                    [{"vapiSecret": []}],
                    200,
                    204,
                    400,
                    401,
                    413,
                    422,
                    503,
                )
            },
            "/twilio/status": {
                "post": _operation(
                    "Twilio's call status callback",
                    [{"twilioSignature": []}],
                    204,
                    400,
                    403,
                    413,
                )
            },
        },
    }
