"""Always-on desktop control: the shipped desktop grammar with its real actions.

Run:  python demos/desktop_control.py              (microphone; actions really run)
      python demos/desktop_control.py --dry-run    (show the argv each command would run)

Say "computer, open firefox", "switch to workspace two", "volume up", "go to sleep" (the engine
then ignores everything until "wake up"). Actions are argv lists run without a shell (xdotool,
wmctrl, pactl, playerctl when installed). The browser context is switched on when a browser
window has focus, so browser-only commands ("go back", "reload the page") work only there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
from dataclasses import replace

from moonshine_live.actions import ActionConfig
from moonshine_live.commands import CommandConfig
from moonshine_live.engine import Engine, EngineConfig
from moonshine_live.events import CommandEvent, ErrorEvent

BROWSERS = ("firefox", "chrome", "chromium")


def focused_window_class() -> str:
    """The WM_CLASS of the focused window, via xdotool (empty when unavailable)."""
    if not shutil.which("xdotool"):
        return ""
    try:
        window = subprocess.run(
            ["xdotool", "getactivewindow", "getwindowclassname"],
            capture_output=True, text=True, timeout=1, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return window.stdout.strip().lower()


async def follow_focus(engine: Engine) -> None:
    """Keep the grammar's context in step with the focused app, twice a second."""
    while True:
        window = await asyncio.to_thread(focused_window_class)
        engine.set_context(*(["browser"] if any(b in window for b in BROWSERS) else []))
        await asyncio.sleep(0.5)


async def main(dry_run: bool, device: str | None) -> None:
    from moonshine_live.mic import CaptureConfig

    config = EngineConfig(
        capture=CaptureConfig(device=device),
        commands=CommandConfig(
            grammars=("desktop",), actions=replace(ActionConfig(), dry_run=dry_run)
        ),
        partial_interval_ms=0,
    )
    engine = Engine(config)

    @engine.on("command")
    def show(command: CommandEvent) -> None:
        heard = f"({command.text!r}, {command.latency_ms:.0f} ms)"
        print(f"{command.intent} {command.slots or ''}  {heard}")

    @engine.on("error")
    def warn(error: ErrorEvent) -> None:
        print(f"! {error.message}")

    async with engine:
        print(f"listening; mode {engine.mode!r}; Ctrl-C to stop")
        focus = asyncio.create_task(follow_focus(engine))
        try:
            await engine.wait()
        finally:
            focus.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="show actions instead of running")
    parser.add_argument("--device", help="input device (index or part of its name)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.dry_run, args.device))
