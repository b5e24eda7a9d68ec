"""Start-up of the engine's transcriber, cold and warm, each in a fresh process.

Why: the live engine compiles its decode step, which costs about a minute the first time on a
small CPU; after that every start should load the precompiled step from disk and be ready within
a few seconds, at full speed from the first utterance, in a few hundred MB. This measures exactly
that, the way a user meets it: a new `python` process that imports the package and builds
`Transcriber(DecodeConfig(compile=True))` (which warms up), next to the eager
`DecodeConfig(compile=False)`.

Every child runs with a temporary cache root (MOONSHINE_LIVE_CACHE) holding a copy of the already
converted checkpoint but no `compiled/` directory, and without TORCHINDUCTOR_CACHE_DIR, so
inductor's caches go under that root too: the first compiled child is the cold start (build and
save the step), the later ones are warm starts (load it). "ready" is the time from spawning the
child to its "ready" line, printed once the transcriber is warm; memory is VmRSS (now) and VmHWM
(peak) from /proc/self/status at ready and after transcribing the wheel's 10 s beckett.wav
three times; the first of those decodes is shown next to the later ones. Warnings follow the
table when a number means something else than it seems (a warm start that compiled, a compile
after ready), with the children's package log lines (INFO and up, e.g. why a step was rebuilt).

    python benchmarks/startup.py [--warm-runs 3] [--json [PATH]]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from moonshine_live.checkpoint.embedded import ensure_default_checkpoint
from moonshine_live.checkpoint.ort_weights import locate_moonshine_cpp_files

READY_LINE = "ready"
CHILD_TIMEOUT_S = 1200  # a cold compile takes 1-2 minutes on 2 busy cores
UTTERANCES = 3  # transcriptions of the 10 s clip after ready: the first, and later ones
READY_TARGET_S = 5.0  # warm start, spawn to ready (seconds)
RSS_TARGET_MB = 600.0  # peak resident memory after a 10 s utterance (MB)
CONFIGS = {"compiled": "DecodeConfig(compile=True)", "eager": "DecodeConfig(compile=False)"}

# The child: argv = config name ("compiled" / "eager"), wav path, ready line, utterances.
CHILD = """
import time
top = time.monotonic()
import json, logging, statistics, sys
logging.basicConfig(format="%(name)s %(levelname)s: %(message)s")
logging.getLogger("moonshine_live").setLevel(logging.INFO)  # e.g. why a saved step was not used
from moonshine_live.capture.audio import load_audio
from moonshine_live.asr.config import DecodeConfig
from moonshine_live.asr.transcriber import Transcriber
imported = time.monotonic()

def memory_mb():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}

def graphs_compiled():
    utils = sys.modules.get("torch._dynamo.utils")  # not imported at all when eager
    return utils.counters["stats"]["unique_graphs"] if utils else 0

transcriber = Transcriber(DecodeConfig(compile=sys.argv[1] == "compiled"))
at_ready, graphs_at_ready = memory_mb(), graphs_compiled()
print(sys.argv[3], flush=True)
audio = load_audio(sys.argv[2])
runs = [transcriber.transcribe(audio) for _ in range(int(sys.argv[4]))]
after = memory_mb()
print(json.dumps({
    "top": top,
    "import_s": imported - top,
    "load_ms": transcriber.load_ms,
    "warm_up_ms": transcriber.warm_up_ms,
    "compiled": transcriber.compiled,
    "loaded_from_disk": transcriber.compiled_from_cache,
    "rss_ready_mb": at_ready["VmRSS"],
    "hwm_ready_mb": at_ready["VmHWM"],
    "rss_10s_mb": after["VmRSS"],
    "hwm_10s_mb": after["VmHWM"],
    "encode_first_ms": runs[0].encode_ms,
    "encode_later_ms": statistics.median(r.encode_ms for r in runs[1:]),
    "decode_first_ms": runs[0].decode_ms,
    "decode_later_ms": statistics.median(r.decode_ms for r in runs[1:]),
    "same_tokens": len({r.tokens for r in runs}) == 1,
    "text": runs[0].text,
    "graphs_at_ready": graphs_at_ready,
    "graphs_after_10s": graphs_compiled(),
}), flush=True)
"""

COLUMNS = (  # (key, header, format) of the table
    ("ready_s", "ready_s", ".2f"),
    ("interpreter_s", "python_s", ".2f"),
    ("import_s", "import_s", ".2f"),
    ("load_ms", "load_ms", ".0f"),
    ("warm_up_ms", "warmup_ms", ".0f"),
    ("rss_ready_mb", "rss_ready", ".0f"),
    ("hwm_ready_mb", "hwm_ready", ".0f"),
    ("rss_10s_mb", "rss_10s", ".0f"),
    ("hwm_10s_mb", "hwm_10s", ".0f"),
    ("encode_first_ms", "enc_1st", ".0f"),
    ("encode_later_ms", "enc_later", ".0f"),
    ("decode_first_ms", "dec_1st", ".0f"),
    ("decode_later_ms", "dec_later", ".0f"),
)


def child_env(root: Path) -> dict[str, str]:
    """The parent's environment with our cache at `root` and inductor's left to follow it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
    }
    return env | {"MOONSHINE_LIVE_CACHE": str(root)}


def run_child(config: str, wav: Path, env: dict[str, str]) -> dict[str, object]:
    """One fresh process: spawn -> ready -> three 10 s transcriptions; its numbers."""
    with tempfile.TemporaryFile("w+") as stderr:
        spawned = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, config, str(wav), READY_LINE, str(UTTERANCES)],
            stdout=subprocess.PIPE, stderr=stderr, env=env, text=True,
        )  # fmt: skip
        try:
            ready = None
            lines = []
            for line in child.stdout:
                if ready is None and line.strip() == READY_LINE:
                    ready = time.monotonic()
                lines.append(line)
            child.wait(timeout=CHILD_TIMEOUT_S)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        stderr.seek(0)
        errors = stderr.read()
        if child.returncode != 0 or ready is None:
            sys.exit(f"{config} child failed (exit {child.returncode}):\n{errors[-3000:]}")
    result = json.loads(lines[-1])
    result["log"] = [line for line in errors.splitlines() if line.startswith("moonshine_live")]
    result |= {"ready_s": ready - spawned, "interpreter_s": result.pop("top") - spawned}
    return result


def summarize(runs: list[dict[str, object]]) -> dict[str, object]:
    """Medians of the numbers; flags true only when true in every run."""
    row: dict[str, object] = {"runs": len(runs)}
    for key, value in runs[0].items():
        if key == "log":
            continue  # printed per run
        if isinstance(value, bool):
            row[key] = all(r[key] for r in runs)
        elif isinstance(value, int | float):
            row[key] = statistics.median(r[key] for r in runs)
        else:
            row[key] = value
    return row


def print_table(rows: dict[str, dict[str, object]]) -> None:
    header = f"{'start':<16}{'runs':>5}" + "".join(f"{h:>10}" for _, h, _ in COLUMNS)
    print(header + f"{'from_disk':>10}{'graphs':>8}")
    for name, row in rows.items():
        cells = "".join(f"{row[key]:>10{fmt}}" for key, _, fmt in COLUMNS)
        from_disk = "yes" if row["loaded_from_disk"] else "no"
        graphs = f"{row['graphs_at_ready']:.0f}->{row['graphs_after_10s']:.0f}"
        print(f"{name:<16}{row['runs']:>5}{cells}{from_disk:>10}{graphs:>8}")
    print(
        "ready_s: spawn -> warm transcriber; python_s: spawn -> first line of the child; memory in "
        "MB (rss = VmRSS,\nhwm = VmHWM peak) at ready and after the 10 s clip; enc/dec: the first "
        f"10 s transcription vs the median of\nthe next {UTTERANCES - 1}; graphs: dynamo graphs "
        "compiled by ready -> after the 10 s clips (a rise is a recompile)"
    )


def check_targets(rows: dict[str, dict[str, object]]) -> dict[str, bool]:
    """Warm compiled start: ready within READY_TARGET_S, peak memory within RSS_TARGET_MB."""
    warm = rows["compiled warm"]
    checks = (
        (f"warm start ready_s <= {READY_TARGET_S:g}", warm["ready_s"], READY_TARGET_S),
        (
            f"peak RSS after 10 s (hwm_10s) <= {RSS_TARGET_MB:g} MB",
            warm["hwm_10s_mb"],
            RSS_TARGET_MB,
        ),
    )
    print("targets (compiled, warm):")
    results = {}
    for label, value, limit in checks:
        results[label] = value <= limit
        print(f"  {label:<44}{value:>8.1f}  {'met' if results[label] else 'not met'}")
    return results


def print_warnings(
    rows: dict[str, dict[str, object]], runs: dict[str, list[dict[str, object]]]
) -> None:
    """Anything that makes the numbers mean something else than they seem to."""
    for name, row in rows.items():
        problems = []
        if row["compiled"] != name.startswith("compiled"):
            problems.append("compiled" if row["compiled"] else "not compiled (fell back to eager)")
        if name == "compiled warm" and not row["loaded_from_disk"]:
            problems.append("did not load the precompiled step from disk")
        if not row["same_tokens"]:
            problems.append("tokens differ between the 10 s transcriptions")
        if row["graphs_after_10s"] != row["graphs_at_ready"]:
            problems.append("compiled again after ready")
        for problem in problems:
            print(f"WARNING {name}: {problem}")
    for name, per_run in runs.items():
        for index, run in enumerate(per_run):
            for line in run["log"]:
                print(f"log of {name} run {index + 1}: {line}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-runs", type=int, default=3, help="warm starts per config (median)")
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="also dump raw numbers (- = stdout)"
    )
    args = parser.parse_args(argv)
    if args.warm_runs < 1:
        parser.error("--warm-runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkpoint = ensure_default_checkpoint()  # converted once, in the user's own cache
    wav = locate_moonshine_cpp_files().sample_wav
    names = ("compiled cold", "compiled warm", "eager")
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="moonshine-startup-") as tmp:
        root = Path(tmp)
        shutil.copytree(checkpoint, root / checkpoint.name)
        env = child_env(root)
        print(f"cache root {root} (checkpoint copied, no compiled/); cold start, compiling...")
        runs["compiled cold"].append(run_child("compiled", wav, env))
        compiled_mb = sum(f.stat().st_size for f in (root / "compiled").rglob("*") if f.is_file())
        print(f"compiled/ after the cold start: {compiled_mb / 2**20:.1f} MB")
        for index in range(args.warm_runs):  # interleaved, so drift of the machine hits both
            print(f"warm run {index + 1}/{args.warm_runs}...")
            runs["compiled warm"].append(run_child("compiled", wav, env))
            runs["eager"].append(run_child("eager", wav, env))
    rows = {name: summarize(per) for name, per in runs.items()}
    print(f"transcript: {rows['compiled warm']['text']!r}")
    print_table(rows)
    targets = check_targets(rows)
    print_warnings(rows, runs)
    if args.json:
        payload = {"configs": CONFIGS, "medians": rows, "runs": runs, "targets_met": targets}
        text = json.dumps(payload, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
