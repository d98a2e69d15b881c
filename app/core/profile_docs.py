"""The generated comment lines of a YAML profile: each key's description and Allowed line.

Above each key: the description, then `# Allowed: ...` (continued on `#   ` lines), both
generated; below those, the profile's own lines (why it picked its value). Comment blocks
separated from a key by a blank line are free notes. The file ends with a generated list of
the keys read only from the environment.
"""

from __future__ import annotations

import difflib
import re
import textwrap
from collections.abc import Mapping

import yaml

from app.core.config_checks import flat_items
from app.core.key_docs import KeyDoc

LINE_LENGTH = 100
ALLOWED = "Allowed: "
CONTINUED = "#   "  # a wrapped Allowed line or tail item goes on on lines starting so
ENV_ONLY_HEADING = "# Read only from the environment, never from this file:"
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[a-z_][a-z0-9_]*):(?P<rest>.*)$")


def comment_lines(doc: KeyDoc, indent: str) -> list[str]:
    """The generated comment block of one key in a profile."""
    width = LINE_LENGTH - len(indent) - 2
    lines = textwrap.wrap(doc.description, width, break_on_hyphens=False)
    allowed = textwrap.wrap(
        f"{ALLOWED}{doc.allowed} (code default {doc.default}).",
        width,
        subsequent_indent="  ",
        break_on_hyphens=False,
    )
    return [f"{indent}# {line}" for line in [*lines, *allowed]]


def render_profile(text: str, docs: Mapping[str, KeyDoc], notes: list[str] | None = None) -> str:
    """`text` (a profile) with every key's generated comment lines brought up to date.

    A key whose comment block has no Allowed line yet keeps those lines as its own, below the
    generated ones; a line saying so is appended to `notes`, to be read and pruned.

    Raises:
        ValueError: a key that is not a setting, a key written so it cannot be documented, or
            content after the generated tail.
    """
    lines = text.splitlines()
    body = _body(lines)
    out: list[str] = []
    path: list[tuple[int, str]] = []
    documented: set[str] = set()
    for index, line in enumerate(body):
        match = _KEY_LINE.match(line)
        if match is None:
            out.append(line)
            continue
        indent = len(match["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        key = ".".join([*(name for _, name in path), match["key"]])
        if _opens_section(body, index, indent):
            path.append((indent, match["key"]))
            out.append(line)
            continue
        doc = docs.get(key)
        if doc is None:
            close = difflib.get_close_matches(key, list(docs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            msg = f"profile key {key!r} is not a setting{hint}"
            raise ValueError(msg)
        block_start = len(out)
        while block_start and out[block_start - 1].startswith(" " * indent + "#"):
            block_start -= 1
        own = _own_lines(out[block_start:])
        if own is None:
            own = out[block_start:]
            if own and notes is not None:
                notes.append(
                    f"{key}: its {len(own)} old comment line(s) are kept below the "
                    "generated ones as the profile's reasons; remove what they repeat"
                )
        del out[block_start:]
        out.extend([*comment_lines(doc, match["indent"]), *own, line])
        documented.add(key)
    _check_all_documented(text, documented)
    while out and not out[-1].strip():
        out.pop()
    return "\n".join([*out, "", *_env_only_lines(docs)]) + "\n"


def _body(lines: list[str]) -> list[str]:
    """The lines before the generated tail; only comments may follow its heading."""
    if ENV_ONLY_HEADING not in lines:
        return lines
    at = lines.index(ENV_ONLY_HEADING)
    for number, line in enumerate(lines[at + 1 :], start=at + 2):
        if line.strip() and not line.lstrip().startswith("#"):
            msg = (
                f"line {number} {line.strip()!r} is after the generated tail; allowed: keys "
                f"above the line {ENV_ONLY_HEADING!r}"
            )
            raise ValueError(msg)
    return lines[:at]


def _opens_section(lines: list[str], index: int, indent: int) -> bool:
    """True when the key on lines[index] has no value and the next content line is deeper."""
    value = lines[index].split(":", 1)[1].split(" #", 1)[0].strip()
    if value:
        return False
    for line in lines[index + 1 :]:
        if line.strip() and not line.lstrip().startswith("#"):
            return len(line) - len(line.lstrip(" ")) > indent
    return False


def _own_lines(block: list[str]) -> list[str] | None:
    """The profile's own lines of a key's comment block (after the Allowed line), or None
    when the block has no Allowed line."""
    for index, line in enumerate(block):
        if line.lstrip().startswith(f"# {ALLOWED}"):
            end = index + 1
            while end < len(block) and block[end].lstrip().startswith(CONTINUED):
                end += 1
            return block[end:]
    return None


def _check_all_documented(text: str, documented: set[str]) -> None:
    data = yaml.safe_load(text) or {}
    missing = sorted({key for key, _ in flat_items(data)} - documented)
    if missing:
        msg = (
            f"profile key(s) {', '.join(map(repr, missing))} got no comment; allowed: one "
            "unquoted key per line ('key: value', a section 'name:' with its keys indented below)"
        )
        raise ValueError(msg)


def _env_only_lines(docs: Mapping[str, KeyDoc]) -> list[str]:
    lines = [ENV_ONLY_HEADING]
    for doc in docs.values():
        if not doc.is_env_only:
            continue
        names = " or ".join(name for name in (doc.platform_env, doc.env) if name)
        text = f"{doc.key} ({names}): {doc.description}"
        wrapped = textwrap.wrap(text, LINE_LENGTH - 4, break_on_hyphens=False)
        lines.append(f"# - {wrapped[0]}")
        lines.extend(f"{CONTINUED}{line}" for line in wrapped[1:])
    return lines
