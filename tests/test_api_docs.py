"""docs/api.md and /openapi.json describe the same operations: every ``### METHOD
/path`` heading of the page is an operation of the document, and the reverse."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from api.http.openapi import document

API_MD = Path(__file__).parents[1] / "docs" / "api.md"


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path template) for every operation in an OpenAPI document."""
    methods = {"get", "put", "post", "patch", "delete"}
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in methods
    }


def test_the_api_page_and_the_openapi_document_list_the_same_operations() -> None:
    headings = set(
        re.findall(
            r"^### (GET|POST|PUT|PATCH|DELETE) (/\S+)$", API_MD.read_text(), flags=re.MULTILINE
        )
    )
    assert headings == operations(document())
