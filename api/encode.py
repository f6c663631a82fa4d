"""Arrow rows as JSON: whatever a query selects must serialise, so no client input can make a 500 here."""

from __future__ import annotations

import math
from typing import Any

from fastapi.encoders import jsonable_encoder


def json_safe(value: Any) -> Any:
    """NaN and infinities become null, bytes become hex, the rest as FastAPI encodes it (dates as ISO text)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(v) for v in value]
    encoded = jsonable_encoder(value)
    if isinstance(encoded, float) and not math.isfinite(encoded):  # e.g. a Decimal NaN
        return None
    return encoded
