"""Embedding moonshine-live in an app: your own grammar, your own callbacks, no CLI.

Run:  python demos/embed.py            (the microphone)
      python demos/embed.py --file F   (a recording instead)

A tiny to-do app: "add milk to the list", "read the list", "clear the list". The engine calls
our functions; nothing runs through a shell and the app never sees audio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path

from moonshine_live.commands import CommandConfig
from moonshine_live.engine import Engine, EngineConfig
from moonshine_live.events import CommandEvent, RejectedEvent
from moonshine_live.sources import FileSource

GRAMMAR = """
[intents.add_item]
say = ["add {item} to [the|my] list", "put {item} on [the|my] list"]
slots = { item = "*" }

[intents.read_list]
say = ["(read|show) [me] [the|my] list", "what is on [the|my] list"]

[intents.clear_list]
say = ["(clear|empty) [the|my] list"]
"""


class TodoApp:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, command: CommandEvent) -> None:
        self.items.append(command.slots["item"])
        print(f"added {command.slots['item']!r}")

    def read(self, command: CommandEvent) -> None:
        print("the list:", ", ".join(self.items) or "(empty)")

    async def clear(self, command: CommandEvent) -> None:  # async callbacks work too
        self.items.clear()
        print("cleared")


async def main(recording: str | None) -> None:
    grammar = Path(tempfile.mkdtemp()) / "todo.toml"
    grammar.write_text(GRAMMAR)
    config = EngineConfig(commands=CommandConfig(grammars=(str(grammar),)), partial_interval_ms=0)
    source = FileSource(recording, realtime=True) if recording else None
    app = TodoApp()
    engine = Engine(config, source=source)
    engine.on("add_item")(app.add)
    engine.on("read_list")(app.read)
    engine.on("clear_list")(app.clear)

    @engine.otherwise
    def not_understood(rejected: RejectedEvent) -> None:
        print(f"(not a to-do command: {rejected.text!r})")

    async with engine:
        print("ready: say 'add milk to the list' (Ctrl-C to stop)")
        await engine.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", help="a recording to use instead of the microphone")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args().file))
