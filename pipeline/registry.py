"""Named kinds of a thing (task kinds, export formats), each declared once, where it is defined.

A `Registry` is filled as the modules that define its items are imported; the job schema, the CLI's choices, the
REST API's enums and the trainer read the names from it, so adding a kind means writing its module and nothing
else. `Registry.field()` is the pydantic type of a field naming one item: it checks the name when a value is
validated and lists the names when a JSON schema (OpenAPI) is made, so a kind registered after the model was
defined is known to both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, Generic, TypeVar

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

T = TypeVar("T")


class Registry(Generic[T]):
    """Items of one kind by name. `what` names the kind in messages ("task kind", "export format")."""

    def __init__(self, what: str, load: Callable[[], object] | None = None):
        """`load` imports the modules that register the built-in items; it runs before the names are first read."""
        self.what = what
        self._items: dict[str, T] = {}
        self._load = load

    def register(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = item
        return item

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None
            load()
        return self._items

    def names(self) -> tuple[str, ...]:
        return tuple(self._loaded())

    def get(self, name: str) -> T:
        try:
            return self._loaded()[name]
        except KeyError:
            raise KeyError(self.unknown(name)) from None

    def unknown(self, name: object) -> str:
        return f"unknown {self.what} {name!r}; expected one of {', '.join(map(repr, self.names()))}"

    def field(self, *extra: str) -> Any:
        """The pydantic type of a field that names an item (or one of the `extra` names, e.g. "auto")."""
        return Annotated[str, _OneOf(self, extra)]


class _OneOf:
    """Pydantic metadata: the value must be a registered name; the JSON schema enumerates the names."""

    def __init__(self, registry: Registry, extra: Iterable[str]):
        self.registry, self.extra = registry, tuple(extra)

    def choices(self) -> tuple[str, ...]:
        return (*self.registry.names(), *self.extra)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def check(value: str) -> str:
            if value not in self.choices():
                raise ValueError(self.registry.unknown(value) + "".join(f", {e!r}" for e in self.extra))
            return value

        return core_schema.no_info_after_validator_function(check, core_schema.str_schema())

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        return {"type": "string", "enum": list(self.choices())}
