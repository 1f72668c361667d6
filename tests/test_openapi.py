"""/openapi.json stays true: its operations are exactly the routes the application
serves, and every one of them answers on a running engine (never "no route")."""

from __future__ import annotations

import re
from pathlib import Path

from api.http.app import ROUTE_GROUPS
from tests.helpers import ADMIN_TOKEN, http_request, running_engine
from tests.test_api_docs import operations

# A value for each path parameter, so every templated route can be called.
EXAMPLES = {"projectId": "nobody", "id": "nobody", "number": "+15550000000",
            "key_id": "nokey", "call_sid": "CA0", "callSid": "CA0"}  # fmt: skip


async def test_the_document_lists_exactly_the_served_routes_and_each_answers(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0]
        response = await http_request("GET", f"{base}/openapi.json")
        document = response.json()
        served = engine.app.routes()
        mounts = engine.app.mounts
        answers = {}
        for method, template in sorted(operations(document)):
            path = re.sub(r"\{(\w+)\}", lambda m: EXAMPLES[m[1]], template)
            body: dict[str, object] | None = {} if method in ("POST", "PUT", "PATCH") else None
            answer = await http_request(method, base + path, json=body, token=ADMIN_TOKEN)
            answers[(method, template)] = answer
    assert response.status == 200
    assert document["openapi"].startswith("3.")
    assert operations(document) == served
    # The route table: each operation reaches the mount that declares it, first match
    # wins, and every mount counts its requests under a known route label.
    for method, template in served:
        path = re.sub(r"\{(\w+)\}", lambda m: EXAMPLES[m[1]], template)
        first = next(mount for mount in mounts if mount.matches(path))
        assert (method, template) in first.templates, (method, template, first.path)
    assert {mount.group for mount in mounts} <= set(ROUTE_GROUPS)
    for operation, answer in answers.items():
        assert answer.status not in (405, 501), operation
        if answer.status == 404:  # an unknown example id, not an unknown route
            assert "no route" not in answer.body.decode(), operation
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert operation["summary"], (method, path)
            assert operation["responses"], (method, path)
