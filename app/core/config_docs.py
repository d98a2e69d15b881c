"""One source for what each settings key means: the pydantic Field description and range.

The comment above each key in the profiles (config/<profile>.yaml) and the table in the README
are generated from it, so they cannot drift apart:

    python -m app.core.config_docs --check   # exit 1 and a diff when a file is out of date
    python -m app.core.config_docs --write   # rewrite them (make config-docs)

In a profile, the comment block directly above a key is the key's description, then one
``# Allowed: ...`` line (both generated), then the profile's own lines: why it picked this value.
Comment blocks separated from a key by a blank line are free notes and stay as written.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from app.core.config import ENV_PREFIX, PLATFORM_ENV_VARS, Settings

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("local", "starter", "standard")
README = ROOT / "README.md"
LINE_LENGTH = 100
ALLOWED_PREFIX = "# Allowed: "
ENV_ONLY_HEADING = "# Read only from the environment, never from this file:"
TABLE_START = "<!-- config-table:start -->"
TABLE_END = "<!-- config-table:end -->"
# The README shows the keys a user most often tunes; the profiles show every key.
README_KEYS = (
    "server.workers",
    "server.worker_class",
    "server.max_worker_rss_mb",
    "server.recycle_overlap_max_workers",
    "server.max_requests",
    "server.graceful_timeout_seconds",
    "server.head_timeout_seconds",
    "server.max_connections",
    "caches.total_budget_mb",
    "caches.users.max_size",
    "caches.users.policy",
    "caches.users.ttl_seconds",
    "memory.soft_limit_mb",
    "memory.hard_limit_mb",
    "memory.recycle_limit_mb",
    "memory.interval_seconds",
    "monitor.add_headers",
    "history.interval_seconds",
    "history.max_samples",
    "trace.max_seconds",
    "payload.max_size_kib",
    "store.pool_max_size",
    "store.max_page_size",
    "coherence.degraded_ttl_seconds",
    "logging.level",
    "logging.access_log",
    "health.details",
    "docs.openapi",
)
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[a-z_][a-z0-9_]*):(?P<rest>.*)$")
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)\.\s")


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


def key_docs(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, KeyDoc]:
    """Every leaf key of `model`, dotted, with its documentation.

    Raises:
        ValueError: a key has no description.
    """
    docs: dict[str, KeyDoc] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        key = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            docs.update(key_docs(annotation, f"{key}."))
            continue
        if key == "config_file":
            continue  # set by the loader, not a setting
        if not field.description:
            msg = f"settings key {key!r} has no Field description; allowed: every key has one"
            raise ValueError(msg)
        docs[key] = KeyDoc(
            key=key,
            description=" ".join(field.description.split()),
            allowed=_allowed(field),
            default=_scalar(field.default),
            env=ENV_PREFIX + "__".join(key.upper().split(".")),
            platform_env=PLATFORM_ENV_VARS.get(key),
            is_env_only=_is_secret(annotation),
        )
    return docs


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _allowed(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, Mapping) and isinstance(extra.get("allowed"), str):
        return str(extra["allowed"])
    annotation = field.annotation
    args = get_args(annotation)
    is_optional = (get_origin(annotation) in (Union, types.UnionType)) and type(None) in args
    base = (
        next((arg for arg in args if arg is not type(None)), annotation)
        if is_optional
        else annotation
    )
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


def _scalar(value: Any) -> str:
    """A value as a YAML profile writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def comment_lines(doc: KeyDoc, indent: str) -> list[str]:
    """The generated comment block of one key in a profile."""
    width = LINE_LENGTH - len(indent) - 2
    lines = textwrap.wrap(doc.description, width, break_on_hyphens=False)
    allowed = textwrap.wrap(
        f"{ALLOWED_PREFIX[2:]}{doc.allowed} (code default {doc.default}).",
        width,
        break_on_hyphens=False,
    )
    return [f"{indent}# {line}" for line in [*lines, *allowed]]


def render_profile(text: str, docs: Mapping[str, KeyDoc]) -> str:
    """`text` (a profile) with every key's generated comment lines brought up to date.

    Raises:
        ValueError: the profile has a key that is not a setting.
    """
    lines = text.splitlines()
    out: list[str] = []
    path: list[tuple[int, str]] = []
    for line in lines:
        if line.startswith(ENV_ONLY_HEADING):
            break  # the generated tail follows
        match = _KEY_LINE.match(line)
        if match is None:
            out.append(line)
            continue
        indent = len(match["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        key = ".".join([*(name for _, name in path), match["key"]])
        value = match["rest"].split(" #", 1)[0].strip()
        if not value:
            path.append((indent, match["key"]))
            out.append(line)
            continue
        doc = docs.get(key)
        if doc is None:
            msg = f"profile key {key!r} is not a setting; allowed: one of {', '.join(docs)}"
            raise ValueError(msg)
        block_start = len(out)
        while block_start and out[block_start - 1].startswith(" " * indent + "#"):
            block_start -= 1
        block = out[block_start:]
        own = _own_lines(block)
        del out[block_start:]
        out.extend(comment_lines(doc, match["indent"]))
        out.extend(own)
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    out.extend(["", *_env_only_lines(docs)])
    return "\n".join(out) + "\n"


def _own_lines(block: list[str]) -> list[str]:
    """The profile's own lines of a key's comment block: those after the Allowed line."""
    for index, line in enumerate(block):
        if line.lstrip().startswith(ALLOWED_PREFIX):
            end = index  # a wrapped Allowed line goes on until it ends with ")."
            while end + 1 < len(block) and not block[end].rstrip().endswith(")."):
                end += 1
            return block[end + 1 :]
    return block


def _env_only_lines(docs: Mapping[str, KeyDoc]) -> list[str]:
    lines = [ENV_ONLY_HEADING]
    for doc in docs.values():
        if not doc.is_env_only:
            continue
        names = " or ".join(name for name in (doc.platform_env, doc.env) if name)
        text = f"{doc.key} ({names}): {doc.description}"
        wrapped = textwrap.wrap(text, LINE_LENGTH - 4, break_on_hyphens=False)
        lines.append(f"# - {wrapped[0]}")
        lines.extend(f"#   {line}" for line in wrapped[1:])
    return lines


def render_readme(text: str, docs: Mapping[str, KeyDoc], profiles: Mapping[str, Path]) -> str:
    """`text` (the README) with the table between the config-table markers regenerated.

    Raises:
        ValueError: the markers are missing.
    """
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        msg = f"README has no {TABLE_START} ... {TABLE_END} block; allowed: add both markers"
        raise ValueError(msg)
    values = {name: _profile_values(path) for name, path in profiles.items()}
    head = ["Key", *profiles, "Allowed", "Environment variable", "Meaning"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in README_KEYS:
        doc = docs[key]
        env = " or ".join(f"`{name}`" for name in (doc.env, doc.platform_env) if name)
        cells = [f"`{key}`"]
        cells += [
            _scalar(values[name][key]) if key in values[name] else doc.default for name in profiles
        ]
        cells += [doc.allowed, env, doc.summary]
        cells = [cell.replace("|", "\\|") for cell in cells]
        rows.append("| " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    return f"{text[: start + len(TABLE_START)]}\n{table}\n{text[end:]}"


def _profile_values(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return dict(flat_items(data))


def flat_items(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf of a parsed profile."""
    for name, value in data.items():
        if isinstance(value, Mapping):
            yield from flat_items(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def expected_files(root: Path = ROOT) -> dict[Path, str]:
    """Each generated file and the text it should have."""
    docs = key_docs()
    profiles = {name: root / "config" / f"{name}.yaml" for name in PROFILES}
    expected = {
        path: render_profile(path.read_text(encoding="utf-8"), docs) for path in profiles.values()
    }
    readme = root / README.name
    expected[readme] = render_readme(readme.read_text(encoding="utf-8"), docs, profiles)
    return expected


def stale_files(root: Path = ROOT) -> list[tuple[Path, str]]:
    """(file, unified diff) for every generated file that is out of date."""
    stale = []
    for path, text in expected_files(root).items():
        current = path.read_text(encoding="utf-8")
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{path.name} (now)",
                f"{path.name} (from the Field descriptions)",
            )
            stale.append((path, "".join(diff)))
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.core.config_docs", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a file is out of date")
    mode.add_argument("--write", action="store_true", help="rewrite the generated parts")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this)")
    args = parser.parse_args(argv)
    root: Path = args.root
    if args.write:
        for path, text in expected_files(root).items():
            if path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
                sys.stdout.write(f"rewrote {path.relative_to(root)}\n")
        return 0
    stale = stale_files(root)
    for path, diff in stale:
        sys.stdout.write(diff)
        sys.stdout.write(
            f"{path.relative_to(root)} differs from the settings' Field descriptions: run "
            "`make config-docs` (edit the description in app/core/*_settings.py, not here)\n"
        )
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
