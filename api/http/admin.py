"""The admin API: projects, their phone numbers and their API keys.

Every route needs ``Authorization: Bearer <ADMIN_TOKEN>`` (401 otherwise). A project
written with an on-call number this engine cannot transfer live calls to (no Twilio
account: api/http/twilio_access.py) is logged as a warning; ``/health/detailed`` lists
it too. Bodies are JSON objects, validated by engine/projects.py and
engine/phone_numbers.py: a 422 lists one message per field. The database work runs in
the store (the only code that talks to Postgres) through its query lane, as plain
queries (engine/store_queries.py) parsed and authorised here; a database that does not
answer in time gives 503, never a hung request.

    POST   /admin/projects                          create (409 if the id exists)
    GET    /admin/projects                          list
    GET    /admin/projects/{id}                     read
    PUT    /admin/projects/{id}                     create or replace (201 / 200)
    PATCH  /admin/projects/{id}                     change some fields
    DELETE /admin/projects/{id}                     delete (its numbers and keys too)
    POST   /admin/projects/{id}/phone-numbers       {"number": "+1...", "system": "openai"}
    GET    /admin/phone-numbers[?project=ID]        every number (or one project's)
    PATCH  /admin/phone-numbers/{number}            change its system and Vapi ids
    DELETE /admin/phone-numbers/{number}
    POST   /admin/projects/{id}/api-keys            {"name": "..."}: the key, shown once
    GET    /admin/projects/{id}/api-keys            the keys (never their hashes)
    DELETE /admin/api-keys/{key_id}                 revoke
    GET    /admin/calls/{call_sid}                  one call's record and its function calls

A write (any method but GET) is routed by on this instance when its answer comes back:
the next call to a number just toggled is answered by the system it was toggled to.

JSON keys are camelCase both ways, as on the analytics API (engine/json_case.py). The
old snake_case names of request fields are accepted for one release: such a request is
answered with a ``Deprecation`` header (RFC 9745), and each old name is logged once, so
the log shows that someone still sends it without one line per request.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs

import msgspec
import trio

from actors.routing import refresh_routing
from api.http.asgi import Request, Response, error
from api.http.token_auth import bearer_matches, unauthorized
from engine.field_checks import FieldError, ValidationFailed, decode_json_object
from engine.json_case import BothNames, camel, camel_keys, field_to_api, from_api
from engine.key_limits import KeyLimits
from engine.phone_numbers import NUMBER_FIELDS, parse_phone_number
from engine.projects import PROJECT_FIELDS, parse_project
from engine.refusals import Refusals
from engine.store_queries import (
    AddPhoneNumber,
    Conflict,
    CreateApiKey,
    CreateProject,
    DeletePhoneNumber,
    DeleteProject,
    GetCall,
    GetProject,
    ListApiKeys,
    ListPhoneNumbers,
    ListProjects,
    NotFound,
    PatchPhoneNumber,
    PatchProject,
    PutProject,
    RevokeApiKey,
    StoreUnavailable,
    ask_store,
)

if TYPE_CHECKING:
    from engine.config import Secret
    from engine.mailbox import Outbox
    from engine.messages import RefreshRouting
    from engine.store_queries import Query, StoreQuery

log = logging.getLogger("afterhours.admin")
T = TypeVar("T")

ADMIN_QUERY_TIMEOUT_S = 10.0
ROUTING_REFRESH_TIMEOUT_S = 3.0
LANE_QUEUE_TIMEOUT_S = 1.0  # a request that cannot even queue on the read lane: 503
# Operators and their scripts: generous, but a runaway loop cannot fill the read lane.
ADMIN_CONCURRENCY = 8
ADMIN_RATE_PER_S = 50.0
ADMIN_BURST = 200

# RFC 9745: the date from which the old snake_case field names are deprecated, as a
# structured-field date (seconds since the epoch). They go in the next release.
OLD_NAMES_DEPRECATED_AT = datetime(2026, 12, 2, tzinfo=UTC)
DEPRECATION = f"@{int(OLD_NAMES_DEPRECATED_AT.timestamp())}".encode()
# Values named by someone else, returned as they were written: a tool's JSON schema (its
# property names are the business function's) and the model's arguments to a function.
OPAQUE_FIELDS = ("parameters", "arguments")
_ERROR_FIELDS = frozenset(PROJECT_FIELDS) | frozenset(NUMBER_FIELDS)


class Sent:
    """One request's JSON body, read in the API's names; the old names it used."""

    def __init__(self, request: Request) -> None:
        self._body = request.body
        self.old_names: list[str] = []

    def json(self, fields: Collection[str]) -> dict[str, Any]:
        """The body as a JSON object in the engine's names (``ValidationFailed`` if it is
        not one, ``BothNames`` for one field sent under both names)."""
        renamed, old = from_api(decode_json_object(self._body), fields)
        self.old_names += old
        return renamed


Handler = Callable[[Request, dict[str, str], Sent], Awaitable[Response]]


class AdminApi:
    def __init__(
        self,
        queries: Outbox[StoreQuery],
        admin_token: Secret | None,
        *,
        routing: Outbox[RefreshRouting] | None = None,
        refusals: Refusals | None = None,
        transfers_problem: str | None = None,  # why no live call can be transferred
    ) -> None:
        self._queries = queries
        self._transfers_problem = transfers_problem  # the store's read lane, apart from call setup
        self._routing = routing
        self._refusals = refusals or Refusals()
        self._limits = KeyLimits(
            concurrency=ADMIN_CONCURRENCY, rate_per_s=ADMIN_RATE_PER_S, burst=ADMIN_BURST
        )
        # Without a token (it is generated for local use, required otherwise) nobody gets in.
        self._token = admin_token.reveal().encode() if admin_token else None
        # The old field names already logged: one instance serves a process, so each is
        # logged once per process however often it is sent. Bounded: only the engine's
        # own field names get here, never a key a client made up.
        self._warned: set[str] = set()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(r"/admin/projects"), self._create),
            ("GET", re.compile(r"/admin/projects"), self._list),
            ("GET", re.compile(r"/admin/projects/(?P<id>[^/]+)"), self._get),
            ("PUT", re.compile(r"/admin/projects/(?P<id>[^/]+)"), self._put),
            ("PATCH", re.compile(r"/admin/projects/(?P<id>[^/]+)"), self._patch),
            ("DELETE", re.compile(r"/admin/projects/(?P<id>[^/]+)"), self._delete),
            ("POST", re.compile(r"/admin/projects/(?P<id>[^/]+)/phone-numbers"), self._add_number),
            ("GET", re.compile(r"/admin/phone-numbers"), self._list_numbers),
            ("PATCH", re.compile(r"/admin/phone-numbers/(?P<number>[^/]+)"), self._patch_number),
            ("DELETE", re.compile(r"/admin/phone-numbers/(?P<number>[^/]+)"), self._delete_number),
            ("POST", re.compile(r"/admin/projects/(?P<id>[^/]+)/api-keys"), self._create_key),
            ("GET", re.compile(r"/admin/projects/(?P<id>[^/]+)/api-keys"), self._list_keys),
            ("DELETE", re.compile(r"/admin/api-keys/(?P<key_id>[^/]+)"), self._revoke_key),
            ("GET", re.compile(r"/admin/calls/(?P<call_sid>[^/]+)"), self._get_call),
        ]

    def route_templates(self) -> set[tuple[str, str]]:
        """(METHOD, path template) of every admin route, for the OpenAPI check."""
        return {(method, _template(pattern)) for method, pattern, _ in self._routes}

    def authorized(self, request: Request) -> bool:
        return bearer_matches(request, self._token)

    async def handle(self, request: Request) -> Response:
        if not self.authorized(request):
            self._refusals.refuse("admin", "bad_token")
            return unauthorized(
                "missing or wrong admin token (Authorization: Bearer <ADMIN_TOKEN>)"
            )
        allowed = [method for method, pattern, _ in self._routes if pattern.fullmatch(request.path)]
        for method, pattern, handler in self._routes:
            found = pattern.fullmatch(request.path)
            if found and method == request.method:
                route = f"{method} {_template(pattern)}"
                return await self._run(handler, request, found.groupdict(), route)
        if allowed:
            return Response(
                405,
                {"error": f"{request.method} not allowed on {request.path}"},
                [(b"allow", ", ".join(allowed).encode())],
            )
        return error(404, f"no route for {request.path}")

    async def _run(
        self, handler: Handler, request: Request, params: dict[str, str], route: str
    ) -> Response:
        sent = Sent(request)
        response = await self._answer(handler, request, params, sent)
        response = dataclasses.replace(
            response, body=camel_keys(response.body, opaque=OPAQUE_FIELDS)
        )
        if not sent.old_names:
            return response
        for old in sent.old_names:
            if old not in self._warned:
                self._warned.add(old)
                log.warning(
                    "an admin request (%s) used the old field name %s: it is %s now, and the "
                    "old names go in the next release (logged once per name)",
                    route,
                    old,
                    camel(old),
                )
        return dataclasses.replace(
            response, headers=[*response.headers, (b"deprecation", DEPRECATION)]
        )

    async def _answer(
        self, handler: Handler, request: Request, params: dict[str, str], sent: Sent
    ) -> Response:
        refused = self._limits.begin("admin", trio.current_time())
        if refused is not None:
            self._refusals.refuse("admin", f"key_{refused.reason}")
            return Response(
                429,
                {"error": f"too many admin requests at once ({refused.reason})"},
                [(b"retry-after", str(refused.retry_after_s).encode())],
            )
        try:
            response = await handler(request, params, sent)
        except BothNames as exc:
            return error(400, str(exc), field=exc.field)
        except ValidationFailed as exc:
            fields = [
                {"field": field_to_api(e.field, _ERROR_FIELDS), "message": e.message}
                for e in exc.errors
            ]
            return error(422, "validation failed", fields=fields)
        except NotFound as exc:
            return error(404, str(exc))
        except Conflict as exc:
            return error(409, str(exc))
        except StoreUnavailable as exc:
            return error(503, f"database unavailable: {exc}; try again")
        finally:
            self._limits.end("admin")
        if request.method != "GET" and self._routing is not None:
            # The write is in PostgreSQL; calls here route by it once this returns (other
            # instances reload on the notification, within about a second).
            await refresh_routing(self._routing, timeout_s=ROUTING_REFRESH_TIMEOUT_S)
        return response

    async def _ask(self, query: Query[T]) -> T:
        return await ask_store(
            self._queries,
            query,
            timeout_s=ADMIN_QUERY_TIMEOUT_S,
            queue_timeout_s=LANE_QUEUE_TIMEOUT_S,
        )

    async def _create(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        project = parse_project(sent.json(PROJECT_FIELDS))
        view = await self._ask(CreateProject(project))
        self._check_transfers(view)
        return Response(201, view)

    async def _list(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        return Response(200, {"projects": await self._ask(ListProjects())})

    async def _get(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        return Response(200, await self._ask(GetProject(params["id"])))

    async def _get_call(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        return Response(200, await self._ask(GetCall(params["call_sid"])))

    async def _put(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        body = sent.json(PROJECT_FIELDS)
        project = parse_project(body, path_id=params["id"])
        keep_secret = "function_secret" not in body  # write-only: omitted means unchanged
        view, created = await self._ask(PutProject(project, keep_secret))
        self._check_transfers(view)
        return Response(201 if created else 200, view)

    async def _patch(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        changes = sent.json(PROJECT_FIELDS)
        view = await self._ask(PatchProject(params["id"], changes))
        self._check_transfers(view)
        return Response(200, view)

    def _check_transfers(self, view: dict[str, Any]) -> None:
        if self._transfers_problem is not None and view.get("on_call_number"):
            log.warning(
                "project %s has an on-call number, but live calls cannot be transferred to it: %s",
                view.get("id"),
                self._transfers_problem,
            )

    async def _delete(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        await self._ask(DeleteProject(params["id"]))
        return Response(204, None)

    async def _add_number(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        number = parse_phone_number(sent.json(NUMBER_FIELDS))
        return Response(201, await self._ask(AddPhoneNumber(params["id"], number)))

    async def _list_numbers(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        # Query parameters, as on the analytics routes: 400 naming the parameter. A typo
        # such as ?projet= must not answer every project's numbers as if filtered.
        # Blank values kept: ?project= (an unset shell variable) is not "every project".
        query = parse_qs(request.query_string, keep_blank_values=True)
        for key, values in query.items():
            if key != "project":
                return error(400, f"unknown parameter {key!r} (only: project)", field=key)
            if len(values) > 1 or not values[0]:
                return error(400, "expected one project id", field=key)
        project = query["project"][0] if query else None
        numbers = await self._ask(ListPhoneNumbers(project))
        return Response(200, {"phone_numbers": numbers})

    async def _patch_number(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        changes = sent.json(NUMBER_FIELDS)
        return Response(200, await self._ask(PatchPhoneNumber(params["number"], changes)))

    async def _delete_number(
        self, request: Request, params: dict[str, str], sent: Sent
    ) -> Response:
        await self._ask(DeletePhoneNumber(params["number"]))
        return Response(204, None)

    async def _create_key(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        body = sent.json(("name",)) if request.body.strip() else {}
        name = body.get("name", "")
        if not isinstance(name, str) or len(name) > 100:
            problem = FieldError("name", "expected a string of 100 characters at most")
            raise ValidationFailed([problem])
        created = await self._ask(CreateApiKey(params["id"], name))
        shown_once = {"note": "store this key now: it is not shown again"}
        return Response(201, msgspec.structs.asdict(created) | shown_once)

    async def _list_keys(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        keys = await self._ask(ListApiKeys(params["id"]))
        return Response(200, {"api_keys": keys})

    async def _revoke_key(self, request: Request, params: dict[str, str], sent: Sent) -> Response:
        await self._ask(RevokeApiKey(params["key_id"]))
        return Response(204, None)


def _template(pattern: re.Pattern[str]) -> str:
    """``/admin/projects/(?P<id>[^/]+)`` as ``/admin/projects/{id}``."""
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.pattern)
