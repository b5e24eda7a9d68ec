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
    _add_model_arguments(transcribe)
    transcribe.set_defaults(run=run_transcribe)

    demo = commands.add_parser("demo", help="transcribe the bundled sample recording")
    _add_model_arguments(demo)
    demo.set_defaults(run=run_demo)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=None,
        help="checkpoint directory or cached Hugging Face repo id (default: embedded base-en)",
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    group.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16")
    )
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    group.add_argument("--compile", action="store_true", help="torch.compile the decode step")


def _decode_config(args: argparse.Namespace):  # -> DecodeConfig (imported lazily)
    from .config import DecodeConfig

    return DecodeConfig(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        compile=args.compile,
    )


def run_transcribe(args: argparse.Namespace) -> int:
    from .transcriber import Transcriber

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
            }
            print(json.dumps(record), flush=True)
        elif len(args.files) > 1:
            print(f"{path}: {result.text}", flush=True)
        else:
            print(result.text, flush=True)
    return status


def run_demo(args: argparse.Namespace) -> int:
    """The quick-start job: load (building on first use) the embedded model, transcribe a sample."""
    import time

    from .ort_weights import locate_moonshine_cpp_files
    from .transcriber import Transcriber

    sample = locate_moonshine_cpp_files().sample_wav
    started = time.perf_counter()
    transcriber = Transcriber(_decode_config(args))
    ready_s = time.perf_counter() - started
    result = transcriber.transcribe_file(sample)
    print(f"model ready in {ready_s:.1f} s ({transcriber.device}, {transcriber.dtype})")
    print(
        f"{sample.name} ({result.audio_s:.1f} s audio, encode {result.encode_ms:.0f} ms, "
        f"decode {result.decode_ms:.0f} ms):"
    )
    print(result.text)
    return EXIT_OK


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
