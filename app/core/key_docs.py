"""What each settings key means, from its pydantic Field: description, allowed values, default."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from app.core.config import PLATFORM_ENV_VARS, Settings, env_name, is_secret
from app.core.config_checks import all_fields

# A sentence ends at ". " (not after "e.g" or "i.e"): the README shows the first one.
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)\.\s")
_LOADER_KEYS = frozenset({"config_file"})  # set by the loader, not a setting


@dataclass(frozen=True)
class KeyDoc:
    """What one settings key means, where it may be set, and what it accepts."""

    key: str
    description: str
    allowed: str
    default: str
    env: str
    platform_env: str | None
    is_env_only: bool

    @property
    def summary(self) -> str:
        """The description's first sentence (the README's "Meaning")."""
        return _SENTENCE_END.split(self.description, maxsplit=1)[0].rstrip(".")


def key_docs(model: type[BaseModel] = Settings) -> dict[str, KeyDoc]:
    """Every leaf key of `model`, dotted, with its documentation.

    Raises:
        ValueError: a key has no description.
    """
    docs: dict[str, KeyDoc] = {}
    for key, field in all_fields(model):
        if key in _LOADER_KEYS:
            continue
        if not field.description:
            msg = f"settings key {key!r} has no Field description; allowed: every key has one"
            raise ValueError(msg)
        docs[key] = KeyDoc(
            key=key,
            description=" ".join(field.description.split()),
            allowed=_allowed(field),
            default=yaml_scalar(field.default),
            env=env_name(key),
            platform_env=PLATFORM_ENV_VARS.get(key),
            is_env_only=is_secret(field),
        )
    return docs


def yaml_scalar(value: Any) -> str:
    """A value as a YAML profile writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _allowed(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, Mapping) and isinstance(extra.get("allowed"), str):
        return str(extra["allowed"])
    annotation = field.annotation
    args = get_args(annotation)
    is_optional = get_origin(annotation) in (Union, types.UnionType) and type(None) in args
    base = next(arg for arg in args if arg is not type(None)) if is_optional else annotation
    if base is bool:
        text = "true or false"
    elif get_origin(base) is Literal:
        choices = [f'"{choice}"' for choice in get_args(base)]
        text = ", ".join(choices[:-1]) + f" or {choices[-1]}"
    else:
        text = _range(field.metadata, base)
    return f"{text}, or null" if is_optional else text


def _range(metadata: Sequence[Any], base: Any) -> str:
    low = high = ""
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = _number(item.ge)
        elif isinstance(item, annotated_types.Gt):
            low = f">{_number(item.gt)}"
        elif isinstance(item, annotated_types.Le):
            high = _number(item.le)
        elif isinstance(item, annotated_types.Lt):
            high = f"<{_number(item.lt)}"
        elif isinstance(item, annotated_types.MinLen):
            low = _number(item.min_length)
        elif isinstance(item, annotated_types.MaxLen):
            high = _number(item.max_length)
    unit = " characters" if base is str else ""
    if low and high:
        return f"{low} to {high}{unit}" if low.startswith(">") else f"{low}-{high}{unit}"
    if low:
        return f"{low} or more{unit}"
    if high:
        return f"up to {high}{unit}"
    return "any text" if base is str else "any value"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else str(value)
