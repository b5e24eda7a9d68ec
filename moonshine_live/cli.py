"""`moonshine-live` command line: parses arguments, builds configs, calls the library.

Heavy imports (torch, the model) happen inside the command that needs them, so `--help` is
instant. Output contracts: `transcribe --json` prints one object per file with the fields
file, text, tokens, audio_s, encode_ms, decode_ms (more may be added, none renamed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from . import __version__
from .errors import MoonshineLiveError

_LOGGER = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moonshine-live",
        description="Live voice commands on a warm Moonshine speech model.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    transcribe = commands.add_parser("transcribe", help="transcribe audio files")
    transcribe.add_argument("files", nargs="+", metavar="FILE", help="WAV, FLAC, OGG... any rate")
    transcribe.add_argument("--json", action="store_true", help="one JSON object per file")
    _add_model_arguments(transcribe, compile_default=None)
    transcribe.set_defaults(run=run_transcribe)

    recognize = commands.add_parser(
        "recognize", help="one command (or refusal) per recording, as listen would hear it"
    )
    recognize.add_argument("files", nargs="+", metavar="FILE", help="one command per file")
    recognize.add_argument(
        "--grammar",
        action="append",
        required=True,
        metavar="FILE",
        help="a grammar file or shipped name (desktop, home); repeat for several",
    )
    recognize.add_argument("--json", action="store_true", help="one JSON event per file")
    recognize.add_argument("--context", nargs="*", default=[], help="active grammar contexts")
    recognize.add_argument("--mode", default=None, help="engine mode (default: command)")
    _add_decode_arguments(recognize)
    _add_model_arguments(recognize, compile_default=None)
    recognize.set_defaults(run=run_recognize)

    listen = commands.add_parser("listen", help="listen to the microphone (or a file) live")
    where = listen.add_mutually_exclusive_group()
    where.add_argument("--device", default=None, help="input device: index or part of its name")
    where.add_argument("--file", default=None, metavar="PATH", help="read a file instead of a mic")
    listen.add_argument("--realtime", action="store_true", help="with --file: pace like a mic")
    listen.add_argument("--json", action="store_true", help="one JSON event per line")
    listen.add_argument("--no-partials", action="store_true", help="only final transcripts")
    listen.add_argument("--stats", type=float, default=0.0, metavar="S", help="stats every S s")
    listen.add_argument(
        "--grammar",
        nargs="+",
        default=[],
        metavar="FILE",
        help="command grammar files (or shipped names: desktop, home); adds command events",
    )
    listen.add_argument("--dry-run", action="store_true", help="report actions, run none")
    listen.add_argument("--context", nargs="*", default=[], help="initial grammar contexts")
    listen.add_argument(
        "--early-commit", type=int, default=None, metavar="MS",
        help="act on a command no words could change after MS ms of silence, before the VAD's "
        "300 ms (0 = off; default 150 on a microphone decoding within the grammar, else off)",
    )  # fmt: skip
    listen.add_argument(
        "--join-within", type=int, default=None, metavar="MS",
        help="the start of a command cut by a pause waits MS ms for the rest, then both are "
        "decoded as one (within the grammar; 0 = off; default 1500)",
    )  # fmt: skip
    _add_decode_arguments(listen)
    _add_model_arguments(listen, compile_default=True)
    listen.set_defaults(run=run_listen)

    grammar = commands.add_parser("grammar", help="work with grammar files")
    grammar_commands = grammar.add_subparsers(
        dest="grammar_command", metavar="ACTION", required=True
    )
    check = grammar_commands.add_parser("check", help="check grammar files, print examples")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--examples", type=int, default=3, help="example sentences per intent")
    check.set_defaults(run=run_grammar_check)

    match = commands.add_parser("match", help="match text against grammars, print JSON")
    match.add_argument("text", nargs="+", help="transcript text (several: one match each)")
    match.add_argument(
        "--grammar", action="append", required=True, metavar="FILE", help="repeat for several"
    )
    match.add_argument("--context", nargs="*", default=[], help="active contexts")
    match.add_argument("--mode", default=None, help="engine mode (default: command)")
    match.set_defaults(run=run_match)

    devices = commands.add_parser("devices", help="list audio input devices")
    devices.add_argument("--json", action="store_true")
    devices.set_defaults(run=run_devices)

    demo = commands.add_parser("demo", help="voice commands live (mic, else a bundled recording)")
    demo.add_argument("--recording", action="store_true", help="use the recording, not the mic")
    demo.add_argument("--fast", action="store_true", help="read the recording as fast as possible")
    demo.add_argument("--run-actions", action="store_true", help="really run the actions")
    _add_model_arguments(demo, compile_default=True)
    demo.set_defaults(run=run_demo)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser, compile_default: bool | None) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=None,
        help="checkpoint directory or cached Hugging Face repo id (default: embedded base-en)",
    )
    group.add_argument(
        "--compute-device",
        default="auto",
        help="where the model runs: auto, cpu, cuda, cuda:N, mps",
    )
    group.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16")
    )
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    group.add_argument(
        "--weights",
        default="auto",
        choices=("auto", "float", "int8"),
        help="int8: the decoder keeps the checkpoint's int8 weights (CPU, compiled step); "
        "auto: int8 where that applies",
    )
    group.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=compile_default,
        help="compile the decode step and encoder (about 2x faster per token; about two minutes "
        "once per machine, under a second per start) (default: "
        + (
            "compiled if already in the cache, never built"
            if compile_default is None
            else "%(default)s"
        )
        + ")",
    )


def _decode_config(args: argparse.Namespace):  # -> DecodeConfig (imported lazily)
    from .asr.config import DecodeConfig

    return DecodeConfig(
        model=args.model,
        device=args.compute_device,
        dtype=args.dtype,
        threads=args.threads,
        compile=args.compile,
        weights=args.weights,
    )


def _add_decode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decode",
        choices=("constrained", "free"),
        default="constrained",
        help="with a grammar: decode within it, refusing what is no command "
        "(constrained, the default) or decode freely and match the text (free)",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        metavar="C",
        help="constrained: refuse commands below this confidence, 0..1 (default 0.15)",
    )


def _command_config(args: argparse.Namespace, **fields: Any) -> Any:
    from .commands.constrained import ConstrainedConfig
    from .commands.stage import CommandConfig

    constrained = ConstrainedConfig()
    if args.min_confidence is not None:
        constrained = replace(constrained, min_confidence=args.min_confidence)
    return CommandConfig(
        grammars=tuple(args.grammar),
        initial_contexts=tuple(args.context),
        decode=args.decode,
        constrained=constrained,
        **fields,
    )


def run_recognize(args: argparse.Namespace) -> int:
    from .asr.transcriber import Transcriber
    from .commands.offline import print_results
    from .commands.stage import CommandStage

    config = _command_config(args, run_actions=False, reload_interval_s=0.0)
    if args.mode is not None:
        config = replace(config, initial_mode=args.mode)
    stage = CommandStage(config)
    failed = print_results(stage, Transcriber(_decode_config(args)), args.files, args.json)
    return EXIT_FAILED if failed else EXIT_OK


def run_transcribe(args: argparse.Namespace) -> int:
    from .asr.transcriber import Transcriber

    transcriber = Transcriber(_decode_config(args))
    status = EXIT_OK
    for path in args.files:
        try:
            result = transcriber.transcribe_file(path)
        except MoonshineLiveError as exc:
            print(f"moonshine-live: error: {exc}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        if args.json:
            record = {
                "file": path,
                "text": result.text,
                "tokens": list(result.tokens),
                "audio_s": round(result.audio_s, 3),
                "encode_ms": round(result.encode_ms, 1),
                "decode_ms": round(result.decode_ms, 1),
                "compiled": transcriber.compiled,
                "path": transcriber.path,
            }
            print(json.dumps(record), flush=True)
        elif len(args.files) > 1:
            print(f"{path}: {result.text}", flush=True)
        else:
            print(result.text, flush=True)
    return status


def _device_spec(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.strip().isdigit() else value


def run_listen(args: argparse.Namespace) -> int:
    import asyncio

    from .capture.mic import CaptureConfig
    from .engine.engine import EngineConfig

    if args.realtime and not args.file:
        print("moonshine-live: error: --realtime needs --file", file=sys.stderr)
        return EXIT_USAGE
    from .commands.actions import ActionConfig

    commands = _command_config(args, actions=replace(ActionConfig(), dry_run=args.dry_run))
    config = EngineConfig(
        commands=commands,
        capture=CaptureConfig(device=_device_spec(args.device)),
        decode=_decode_config(args),
        partial_interval_ms=0 if args.no_partials else 500,
        stats_interval_s=args.stats,
        early_commit_ms=args.early_commit,
        **({} if args.join_within is None else {"join_within_ms": args.join_within}),
    )
    try:
        return asyncio.run(_listen(config, args))
    except KeyboardInterrupt:
        return 130


async def _listen(config, args: argparse.Namespace) -> int:  # config: EngineConfig
    from .capture.sources import FileSource
    from .engine.engine import Engine
    from .engine.shutdown import StopOnSignals

    source = FileSource(args.file, realtime=args.realtime) if args.file else None
    printer = _print_json if args.json else _print_text
    status = EXIT_OK
    async with Engine(config, source=source) as engine, StopOnSignals(engine) as signals:
        async for event in engine.events():
            printer(event)
            if event.type == "error" and getattr(event, "fatal", False):
                status = EXIT_FAILED
    return status if signals.exit_status is None else signals.exit_status


def _print_json(event) -> None:
    print(json.dumps(event.to_json()), flush=True)


def describe_command(event) -> str:  # event: CommandEvent
    """`intent(slot=value (said 'words'), ...)`: the value the action gets and, where they
    differ, the words said for it (a list's value may be an action code: "three" -> 2)."""
    said = getattr(event, "slot_text", {})
    slots = []
    for name, value in event.slots.items():
        words = said.get(name)
        differ = words is not None and words.lower() != str(value).lower()
        slots.append(f"{name}={value!r} (said {words!r})" if differ else f"{name}={value!r}")
    return f"{event.intent}({', '.join(slots)})"


def describe_rejected(event) -> str | None:  # event: RejectedEvent
    """One line on why speech was not dispatched; None for a transcript without words."""
    from .commands.stage import COMMITTED_EARLY, COOLDOWN
    from .grammar.matcher import NOTHING_SAID

    if event.reason == NOTHING_SAID:
        return None
    if event.reason in (COMMITTED_EARLY, COOLDOWN):
        why = "committed early" if event.reason == COMMITTED_EARLY else "cooldown"
        return f"{event.best_intent} not dispatched again ({why}): {event.text!r}"
    return f"not a command: {event.text!r} ({event.reason})"


def _print_text(event) -> None:
    kind = event.type
    if kind == "ready":
        print(
            f"listening ({event.source}, model on {event.device}, ready in {event.load_ms:.0f} ms)",
            file=sys.stderr,
            flush=True,
        )
    elif kind == "partial" and sys.stdout.isatty():
        print(f"\r  ... {event.text[-70:]:<70}", end="", flush=True)
    elif kind == "transcript":
        clear = "\r" + " " * 78 + "\r" if sys.stdout.isatty() else ""
        print(f"{clear}[{event.t_start:7.2f} - {event.t_end:7.2f}] {event.text}", flush=True)
    elif kind == "command":
        print(f"{' ' * 19} -> {describe_command(event)}", flush=True)
    elif kind == "rejected" and (line := describe_rejected(event)):
        print(f"{' ' * 19}    {line}", flush=True)
    elif kind == "error":
        print(
            f"moonshine-live: {'error' if event.fatal else 'warning'}: {event.message}",
            file=sys.stderr,
            flush=True,
        )
    elif kind == "dropped":
        print(
            f"moonshine-live: dropped {event.t_start:.2f}-{event.t_end:.2f} s ({event.reason})",
            file=sys.stderr,
            flush=True,
        )
    elif kind == "stats":
        print(f"stats: {json.dumps(event.to_json())}", file=sys.stderr, flush=True)


def run_grammar_check(args: argparse.Namespace) -> int:
    """Errors with file:line:column, overlap/shadowing/unused warnings, example sentences."""
    from .commands.stage import resolve_grammar_path
    from .grammar import check_grammar

    try:
        paths = [resolve_grammar_path(f) for f in args.files]
    except MoonshineLiveError as exc:
        print(f"moonshine-live: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    report = check_grammar(paths, examples_per_intent=args.examples)
    print(report.render())
    return EXIT_OK if report.ok else EXIT_FAILED


def run_match(args: argparse.Namespace) -> int:
    from .commands.stage import resolve_grammar_path
    from .grammar import DEFAULT_MODE, load_grammar
    from .grammar.matcher import CommandMatch, Matcher

    matcher = Matcher(load_grammar([resolve_grammar_path(f) for f in args.grammar]))
    matched_all = True
    for text in args.text:
        result = matcher.match(text, args.context, args.mode or DEFAULT_MODE)
        record = {"type": "command" if isinstance(result, CommandMatch) else "rejected"}
        record.update(result.to_dict())
        print(json.dumps(record), flush=True)
        matched_all &= isinstance(result, CommandMatch)
    return EXIT_OK if matched_all else EXIT_FAILED


def run_devices(args: argparse.Namespace) -> int:
    from .capture.mic import list_devices

    devices = list_devices()
    if args.json:
        from dataclasses import asdict

        for device in devices:
            print(json.dumps(asdict(device)))
    elif not devices:
        print("no audio input devices found", file=sys.stderr)
    else:
        for device in devices:
            print(device)
    return EXIT_OK if devices else EXIT_FAILED


def run_demo(args: argparse.Namespace) -> int:
    """The quick-start job: voice commands from the microphone when there is one, otherwise
    from a bundled recording of spoken commands; prints each command as it is dispatched."""
    import asyncio

    from .commands.actions import ActionConfig
    from .commands.stage import CommandConfig
    from .engine.engine import EngineConfig

    config = EngineConfig(
        decode=_decode_config(args),
        partial_interval_ms=0,
        stats_interval_s=0,
        early_commit_ms=DEMO_EARLY_COMMIT_MS,
        commands=CommandConfig(
            grammars=("desktop", "home"),
            actions=replace(ActionConfig(), dry_run=not args.run_actions),
        ),
    )
    try:
        return asyncio.run(_demo(config, args))
    except KeyboardInterrupt:
        return 130


def _has_microphone() -> bool:
    try:
        from .capture.mic import list_devices

        return bool(list_devices())
    except Exception:  # no PortAudio, no server: the recording will do
        return False


async def _demo(config, args: argparse.Namespace) -> int:  # config: EngineConfig
    from importlib.resources import files

    from .capture.sources import FileSource
    from .engine.engine import Engine
    from .engine.shutdown import StopOnSignals

    use_mic = not args.recording and _has_microphone()
    source = None
    if not use_mic:
        recording = files("moonshine_live") / "assets" / DEMO_RECORDING
        source = FileSource(str(recording), realtime=not args.fast)
    print("moonshine-live demo: loading the model (the first run converts it, once)...", flush=True)
    async with Engine(config, source=source) as engine, StopOnSignals(engine) as signals:
        async for event in engine.events():
            _print_demo_event(event, use_mic, args.run_actions, show_latency=not args.fast)
    return EXIT_OK if signals.exit_status is None else signals.exit_status


DEMO_RECORDING = "commands.flac"  # 36 s of TTS commands (flite and espeak-ng voices)
DEMO_EARLY_COMMIT_MS = 150  # benchmarks/live.py: command p50 356 -> 202 ms, same commands


def _print_demo_event(event, use_mic: bool, run_actions: bool, show_latency: bool) -> None:
    kind = event.type
    if kind == "ready":
        where = "the microphone: say a command" if use_mic else "a recording of spoken commands"
        actions = (
            "actions run" if run_actions else "actions are only shown (--run-actions runs them)"
        )
        print(f"ready in {event.load_ms / 1000:.1f} s; listening to {where}; {actions}", flush=True)
        print("grammars: desktop (apps, windows, volume, media...) and home (lights, timers...)")
    elif kind == "command":
        latency = f", {event.latency_ms:.0f} ms after speech" if show_latency else ""
        print(
            f"[{event.t_start:6.2f}s] -> {describe_command(event)}   heard {event.text!r}{latency}",
            flush=True,
        )
    elif kind == "rejected" and (line := describe_rejected(event)):
        print(f"[{event.t_start:6.2f}s]    {line}", flush=True)
    elif kind == "error":
        print(
            f"moonshine-live: {'error' if event.fatal else 'warning'}: {event.message}", flush=True
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except MoonshineLiveError as exc:
        print(f"moonshine-live: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
