"""The base of every settings section: extra keys forbidden, frozen, no boolean for a number."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError


def _accepts_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return any(_accepts_bool(arg) for arg in get_args(annotation))
    return False


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _reject_bool(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode turns YAML `true` into 1 for int and float fields; refuse it.
        if not isinstance(value, bool) or info.field_name is None:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if _accepts_bool(annotation):
            return value
        kind = "an integer" if int in (annotation, *get_args(annotation)) else "a number or text"
        raise PydanticCustomError("bool_not_allowed", f"{kind}, not a boolean")
