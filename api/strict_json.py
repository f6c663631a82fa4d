"""JSON request bodies without ambiguity: a key given twice in one object is a 422 naming it.

`json.loads` keeps the last of two equal keys, so `{"dataset": ..., "dataset": ...}` would run a job on the second
dataset without a word. `StrictJSONRoute` reads the body once more with a hook that refuses duplicates before
FastAPI validates it (the body is cached by Starlette, so it is received once).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class _Duplicate(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def duplicate_key(body: bytes) -> str | None:
    """The first key given twice in one object of a JSON body, or None (also when the body is not JSON:
    FastAPI then says so itself)."""
    try:
        json.loads(body, object_pairs_hook=_no_duplicates)
    except _Duplicate as exc:
        return exc.key
    except (ValueError, RecursionError):
        return None
    return None


class StrictJSONRoute(APIRoute):
    """An APIRoute whose JSON bodies may not repeat a key."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            if "json" in request.headers.get("content-type", ""):
                key = duplicate_key(await request.body())
                if key is not None:
                    raise RequestValidationError([{"loc": ("body",), "type": "duplicate_key", "input": None,
                                                   "msg": f"the key {key!r} is given twice in one object"}])
            return await handler(request)

        return strict
