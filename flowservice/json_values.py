"""Checks that data tasks exchange is JSON-like, as the API must carry it.

Task outputs travel as `google.protobuf.Struct`: objects with string keys,
arrays, strings, numbers, booleans and null. A value outside that set is
caught here, when the task finishes, so the task fails with a clear reason
instead of the call failing later during conversion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["json_problem"]


def json_problem(value: Any, path: str = "output") -> str | None:
    """Describes the first non-JSON-like part of `value`, or returns None if it has none."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value}, which JSON cannot carry"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a non-string key {key!r}"
            problem = json_problem(item, f"{path}.{key}")
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = json_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    return f"{path} holds a {type(value).__name__}, which is not JSON-like"
