"""A small Dockerfile reader: instructions per build stage, with continuation lines joined."""

from __future__ import annotations

import json
import pathlib
import shlex
from dataclasses import dataclass, field


@dataclass
class Stage:
    """One `FROM ... [AS name]` block and its instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        """Every ENV key=value of this stage (the `ENV a=1 b=2` form)."""
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                if not sep:
                    msg = f"ENV {args!r}: use the key=value form"
                    raise ValueError(msg)
                values[key] = value
        return values

    def exec_form(self, keyword: str) -> list[str] | None:
        """The JSON array of the last `keyword` (CMD/ENTRYPOINT), None for the shell form."""
        found = self.all(keyword)
        if not found:
            return None
        args = found[-1]
        if keyword == "HEALTHCHECK":
            args = args.split("CMD", 1)[1]
        try:
            value = json.loads(args)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None


def parse(path: pathlib.Path) -> list[Stage]:
    """Return the stages of the Dockerfile at `path`."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            msg = f"{path}: {keyword} before the first FROM"
            raise ValueError(msg)
        else:
            stages[-1].instructions.append((keyword, " ".join(args.split())))
    return stages
