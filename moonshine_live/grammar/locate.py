"""Positions in TOML text: tomllib gives none, so we find tables, keys and strings ourselves.

Best effort by design: every lookup falls back to an enclosing table (or line 1), so an error
always carries a file, a line and a column even when the exact spot cannot be found.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import tomllib

from moonshine_live.grammar.syntax import Position

_LOGGER = logging.getLogger(__name__)

_TOML_AT_RE = re.compile(r"\(at line (\d+), column (\d+)\)")


class SourceMap:
    """Offsets <-> positions in one file's text, and searches for TOML tables/keys/strings."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self._line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self._tables: dict[tuple[str, ...], int] = {}

    def position(self, offset: int) -> Position:
        line = bisect.bisect_right(self._line_starts, offset)
        return Position(self.file, line, offset - self._line_starts[line - 1] + 1)

    def end(self) -> Position:
        return self.position(len(self.text))

    def table_offset(self, path: tuple[str, ...]) -> int:
        """Offset of the ``[a.b]`` header of table `path`, else of its parent, else 0."""
        if not path:
            return 0
        if path not in self._tables:
            pattern = r"^[ \t]*\[[ \t]*" + r"[ \t]*\.[ \t]*".join(map(_key_pattern, path))
            found = re.search(pattern + r"[ \t]*\]", self.text, re.MULTILINE)
            if found:
                self._tables[path] = found.start()
            else:
                parent = self.table_offset(path[:-1])
                key = self._key_offset(parent, path[-1])
                self._tables[path] = parent if key is None else key
        return self._tables[path]

    def table(self, path: tuple[str, ...]) -> Position:
        return self.position(self.table_offset(path))

    def key(self, path: tuple[str, ...], key: str) -> Position:
        """Position of ``key =`` inside table `path` (the table's header if not found)."""
        start = self.table_offset(path)
        offset = self._key_offset(start, key)
        return self.position(start if offset is None else offset)

    def string(self, path: tuple[str, ...], value: str, key: str | None = None) -> Position:
        """Position of the first character inside the quotes of string `value` in `path`."""
        start = self.table_offset(path)
        if key is not None:
            start = self._key_offset(start, key) or start
        for encoded in dict.fromkeys((value, json.dumps(value, ensure_ascii=False)[1:-1])):
            if not encoded:
                continue
            found = self.text.find(encoded, start)
            if found >= 0:
                return self.position(found)
        return self.position(start)

    def _key_offset(self, start: int, key: str) -> int | None:
        pattern = r"(?:^|[{,])[ \t]*(" + _key_pattern(key) + r")[ \t]*="
        found = re.compile(pattern, re.MULTILINE).search(self.text, start)
        return found.start(1) if found else None


def _key_pattern(key: str) -> str:
    escaped = re.escape(key)
    json_escaped = re.escape(json.dumps(key, ensure_ascii=False)[1:-1])
    return rf"(?:\"{json_escaped}\"|'{escaped}'|{escaped})"


def toml_error(exc: tomllib.TOMLDecodeError, source: SourceMap) -> tuple[str, Position]:
    """Message and position of a tomllib syntax error (its message embeds line and column)."""
    message = str(exc)
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    found = _TOML_AT_RE.search(message)
    if found:
        line, column = int(found.group(1)), int(found.group(2))
    message = _TOML_AT_RE.sub("", message).replace("(at end of document)", "").strip()
    if line is None or column is None:
        return message or "invalid TOML", source.end()
    return message or "invalid TOML", Position(source.file, line, column)


def decode_error(exc: UnicodeDecodeError, data: bytes, file: str) -> Position:
    """Position of the first byte that is not UTF-8."""
    before = data[: exc.start].decode("utf-8", errors="replace")
    return SourceMap(file, before).end()
