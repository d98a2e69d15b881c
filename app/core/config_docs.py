"""`python -m app.core.config_docs --check|--write`: the settings docs generated from the Fields.

Each key's meaning and range are written once, in its pydantic Field (app/core/*_settings.py).
This writes them above every key of the profiles (app.core.profile_docs) and into the README
table between the config-table markers; `--check` exits 1 with a diff when a file differs.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from app.core.config_checks import flat_items
from app.core.key_docs import KeyDoc, key_docs, yaml_scalar
from app.core.profile_docs import render_profile

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("local", "starter", "standard")
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
    "server.refusal_log_interval_seconds",
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
    "history.max_events",
    "history.max_workers",
    "trace.max_seconds",
    "trace.top_n",
    "payload.max_size_kib",
    "store.pool_max_size",
    "store.max_page_size",
    "coherence.degraded_ttl_seconds",
    "logging.level",
    "logging.access_log",
    "logging.repeat_interval_seconds",
    "health.details",
    "docs.openapi",
    "docs.swagger_ui",
    "docs.redoc",
)
# Markdown that a table cell must not interpret: a pipe ends the cell, "<" starts a tag.
_MARKDOWN_ESCAPES = str.maketrans({"|": "\\|", "<": "&lt;", "*": "\\*"})


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
            yaml_scalar(values[name][key]) if key in values[name] else doc.default
            for name in profiles
        ]
        cells += [doc.allowed.translate(_MARKDOWN_ESCAPES), env]
        cells.append(doc.summary.translate(_MARKDOWN_ESCAPES))
        rows.append("| " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    return f"{text[: start + len(TABLE_START)]}\n{table}\n{text[end:]}"


def _profile_values(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return dict(flat_items(data))


def expected_files(root: Path = ROOT, notes: list[str] | None = None) -> dict[Path, str]:
    """Each generated file and the text it should have; `notes` gets what a reader should check.

    Raises:
        ValueError: a profile or the README cannot be documented (the message says why).
    """
    docs = key_docs()
    profiles = {name: root / "config" / f"{name}.yaml" for name in PROFILES}
    expected = {}
    for path in profiles.values():
        found: list[str] = []
        try:
            expected[path] = render_profile(path.read_text(encoding="utf-8"), docs, found)
        except ValueError as exc:
            raise ValueError(f"{path.relative_to(root)}: {exc}") from None
        if notes is not None:
            notes.extend(f"{path.relative_to(root)}: {note}" for note in found)
    readme = root / "README.md"
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
    """0 when the files are up to date (or rewritten), 1 when --check finds one stale, 2 when
    a profile cannot be documented."""
    parser = argparse.ArgumentParser(prog="python -m app.core.config_docs", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a file is out of date")
    mode.add_argument("--write", action="store_true", help="rewrite the generated parts")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this)")
    args = parser.parse_args(argv)
    root: Path = args.root
    try:
        if args.write:
            return _write(root)
        stale = stale_files(root)
    except ValueError as exc:
        sys.stderr.write(f"config-docs: {exc}\n")
        return 2
    for path, diff in stale:
        sys.stdout.write(diff)
        sys.stdout.write(
            f"{path.relative_to(root)} differs from the settings' Field descriptions: run "
            "`make config-docs` (edit the description in app/core/*_settings.py, not here)\n"
        )
    return 1 if stale else 0


def _write(root: Path) -> int:
    notes: list[str] = []
    for path, text in expected_files(root, notes).items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            sys.stdout.write(f"rewrote {path.relative_to(root)}\n")
    for note in notes:
        sys.stdout.write(f"check {note}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
