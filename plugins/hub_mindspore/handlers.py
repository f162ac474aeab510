"""The operator tables of both translators: a decorator that files a handler under operator names."""
from __future__ import annotations

from typing import Any, Callable


def registrar(table: dict[str, Any]) -> Callable[..., Callable[[Any], Any]]:
    """`handles = registrar(OPS)`; then `@handles("Conv", ...)` puts the function in OPS under each name."""
    def handles(*names: str) -> Callable[[Any], Any]:
        def register(handler: Any) -> Any:
            for name in names:
                table[name] = handler
            return handler
        return register
    return handles
