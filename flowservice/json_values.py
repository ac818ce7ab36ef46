"""Normalises data tasks exchange to what the API carries: JSON values.

Task outputs travel as `google.protobuf.Struct`: objects with string keys,
arrays, strings, numbers (doubles), booleans and null. Outputs are normalised
once, when a task finishes, so later tasks, expressions and the client all
see the same values (an int 3 becomes 3.0, a tuple a list). Anything else
makes the task fail with a clear reason instead of the call failing later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["NotJsonError", "to_json"]


class NotJsonError(ValueError):
    """A value that JSON (and so `google.protobuf.Struct`) cannot carry."""


def to_json(value: Any, path: str = "output") -> Any:
    """`value` as JSON data (numbers as floats); `NotJsonError` names the first bad part."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJsonError(f"{path} is {value}, which JSON cannot carry")
        return value
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJsonError(f"{path} has a non-string key {key!r}")
            result[key] = to_json(item, f"{path}.{key}")
        return result
    if isinstance(value, list | tuple):
        return [to_json(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise NotJsonError(f"{path} holds a {type(value).__name__}, which is not JSON-like")
