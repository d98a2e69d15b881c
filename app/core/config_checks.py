"""Diagnostics for settings a person got wrong: where a YAML file breaks, stray env vars."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from app.core.server_settings import MAX_WORKERS


def yaml_error_where(path: Path, exc: yaml.YAMLError) -> str:
    """Where the YAML is broken, as a person would point at it (" at line N (...)").

    PyYAML reports where it noticed the problem: for an unclosed bracket or quote, or a line
    indented wrongly, that is the first token of the next key, often lines later past comments.
    When the token starts its line (or sits in a comment), the line to fix is the last line
    with content before it.
    """
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return ""
    noticed = f"line {mark.line + 1}, column {mark.column + 1}"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return f" at {noticed}"
    line = mark.line
    text = lines[line] if line < len(lines) else ""
    # The token begins its line, or the line is a comment (a quote left open above swallowed
    # it): the line to fix is above.
    if mark.column <= len(text) - len(text.lstrip()) or text.lstrip().startswith("#"):
        for earlier in range(min(line, len(lines)) - 1, -1, -1):
            content = lines[earlier].strip()
            if content and not content.startswith("#"):
                line = earlier
                break
    if line == mark.line:
        return f" at {noticed} ({text.strip()!r})"
    return f" at line {line + 1} ({lines[line].strip()!r}; the parser stopped at {noticed})"


def web_concurrency_problem(raw: str) -> str | None:
    """What is wrong with a WEB_CONCURRENCY value, or None when it is fine (or unset).

    gunicorn itself runs int($WEB_CONCURRENCY) when it is imported, before its config file,
    so a bad value must be caught even when APP_SERVER__WORKERS overrides it in the settings.
    """
    raw = raw.strip()
    if not raw or (raw.isdigit() and 1 <= int(raw) <= MAX_WORKERS):
        return None
    return (
        f"{raw!r} is not a worker count; allowed: an integer 1-{MAX_WORKERS}, or unset "
        "(server.workers from the profile)"
    )


def unmatched_env_vars(
    environ: Mapping[str, str], prefix: str, known: set[str]
) -> list[tuple[str, str]]:
    """Variables starting with `prefix` that are not in `known`, with a "did you mean" hint.

    pydantic-settings silently ignores them, so a misspelled APP_CACHE__USERS__MAX_SIZE
    would leave the profile's value in force without a word.
    """
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(prefix) or upper in known:
            continue
        if any(key.startswith(upper + "__") for key in known):
            continue  # a whole section as JSON, e.g. APP_SERVER='{"workers": 2}'
        close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.75)
        found.append((name, f"; did you mean {close[0]}?" if close else ""))
    return found


def all_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf key of a settings model, dotted ("caches.users.max_size"), with its field."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from all_fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def all_keys(model: type[BaseModel]) -> Iterator[str]:
    """Every leaf key of a settings model, dotted ("caches.users.max_size")."""
    return (key for key, _ in all_fields(model))


def flat_items(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf of nested settings data (a parsed profile, say)."""
    for name, value in data.items():
        if isinstance(value, Mapping):
            yield from flat_items(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value
