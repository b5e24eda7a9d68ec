"""A real capture path for tests: PulseAudio with a null sink, recorded through PortAudio.

Recipe from shared/notes/audio-stack.md: a private pulseaudio (own runtime dir and socket) with
`module-null-sink` "vmic" at 16 kHz mono as the default sink, its monitor as the default source.
`paplay` plays into the sink and sounddevice records the monitor through the ALSA `pulse`
device, so the engine's real sounddevice path runs with no sound hardware. One server per test
process, started by the first test that asks for the `virtual_mic` fixture and stopped when
pytest finishes; a test that kills it gets a fresh one in the next test.

    from audio_server import virtual_mic  # noqa: F401  (the fixture)

Missing pulseaudio / pulseaudio-utils / PortAudio skip the test locally and fail it under CI=true.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require, require_tool

SINK = "vmic"  # the null sink paplay plays into
DEVICE = "pulse"  # the PortAudio (ALSA plugin) device that records the default source
RATE = 16000
_START_TIMEOUT_S = 10.0
_FIRST_BLOCK_TIMEOUT_S = 10.0
_TOOLS = ("pulseaudio", "pactl", "pacat", "paplay")


class VirtualMic:
    """One private PulseAudio server with a null sink; `play` speaks into the "microphone"."""

    device = DEVICE
    samplerate = RATE

    def __init__(self) -> None:
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="moonshine-pulse-"))
        self.socket = self.runtime_dir / "native"
        self.log_path = self.runtime_dir / "pulse.log"
        self.env = {
            **os.environ,
            "HOME": str(self.runtime_dir),  # pulseaudio wants a writable home (cookie, state)
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "PULSE_SERVER": f"unix:{self.socket}",
        }
        self._server: subprocess.Popen[bytes] | None = None
        self._keepalive: subprocess.Popen[bytes] | None = None
        self._players: list[subprocess.Popen[bytes]] = []
        (self.runtime_dir / "test.pa").write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-null-sink sink_name={SINK} rate={RATE} channels=1\n"
            f"set-default-sink {SINK}\n"
            f"set-default-source {SINK}.monitor\n"
        )

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the server and a silent keep-alive stream; raise RuntimeError with the log."""
        self._server = subprocess.Popen(
            ["pulseaudio", "-n", "-F", str(self.runtime_dir / "test.pa"), "--daemonize=no",
             "--exit-idle-time=-1", f"--log-target=file:{self.log_path}"],
            env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._answers():
            if self._server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        # A connected low-latency stream keeps the null sink rendering in small blocks.
        self._keepalive = subprocess.Popen(
            ["pacat", "--playback", f"--device={SINK}", "--raw", "--format=s16le",
             f"--rate={RATE}", "--channels=1", "--latency-msec=20",
             "--client-name=keepalive", "/dev/zero"],
            env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def warm_up(self) -> None:
        """Open one record stream and wait for its first block.

        The first record stream on a fresh server waits up to about 2 s for its first block
        (measured here even with the keep-alive); later ones start in about 25 ms.
        """
        import sounddevice as sd

        first = threading.Event()
        with sd.InputStream(
            device=DEVICE, samplerate=RATE, channels=1, dtype="int16",
            callback=lambda *_: first.set(),
        ):  # fmt: skip
            if not first.wait(_FIRST_BLOCK_TIMEOUT_S):
                raise RuntimeError(f"no audio block from {DEVICE!r}:\n{self.log_tail()}")

    @property
    def alive(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def ensure_running(self) -> None:
        """Restart the server if a test killed or froze it."""
        if self.alive:
            assert self._server is not None
            self._server.send_signal(signal.SIGCONT)  # harmless when not frozen
            if self._answers():
                return
        self.restart()

    def restart(self) -> None:
        self._stop_processes()
        self.start()
        self.warm_up()

    def stop(self) -> None:
        self._stop_processes()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _stop_processes(self) -> None:
        for process in [*self._players, self._keepalive, self._server]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._players.clear()
        self._keepalive = self._server = None

    # ----------------------------------------------------------------- faults

    def kill(self) -> None:
        """SIGKILL the server: the audio server dying mid-stream."""
        assert self._server is not None
        self._server.kill()
        self._server.wait()

    def freeze(self) -> None:
        """SIGSTOP the server: streams stay open but no audio flows (a stalled device)."""
        assert self._server is not None
        self._server.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self._server is not None:
            self._server.send_signal(signal.SIGCONT)

    # ----------------------------------------------------------------- playing

    def play(self, wav: str | Path) -> subprocess.Popen[bytes]:
        """Start playing a WAV into the virtual microphone; returns the paplay process."""
        player = subprocess.Popen(
            ["paplay", f"--device={SINK}", str(wav)], env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._players.append(player)
        return player

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no pulseaudio log)"

    def _answers(self) -> bool:
        result = subprocess.run(
            ["pactl", "info"], env=self.env, capture_output=True, timeout=5, check=False
        )
        return result.returncode == 0


def best_alignment(recorded: np.ndarray, played: np.ndarray) -> tuple[int, float]:
    """(lag, normalized correlation) of `played` inside `recorded`, both float, shape (T,).

    `recorded[lag : lag + len(played)]` is where the played clip landed.
    """
    size = 1 << int(np.ceil(np.log2(len(recorded) + len(played))))
    spectrum = np.fft.rfft(recorded, size) * np.conj(np.fft.rfft(played, size))
    scores = np.fft.irfft(spectrum, size)[: len(recorded) - len(played) + 1]
    lag = int(np.argmax(scores))
    segment = recorded[lag : lag + len(played)]
    denominator = float(np.linalg.norm(segment) * np.linalg.norm(played)) or 1.0
    return lag, float(np.dot(segment, played)) / denominator


# --------------------------------------------------------------------- the fixture

_SERVER: VirtualMic | None = None
_SAVED_ENV: dict[str, str | None] = {}


def _start_server() -> VirtualMic:
    """Start the process-wide server and point PortAudio at it (before it scans devices)."""
    for tool in _TOOLS:
        require_tool(tool)
    try:
        import sounddevice as sd
    except OSError as error:
        require("PortAudio (libportaudio2)", False, str(error))
        raise
    server = VirtualMic()
    try:
        server.start()
        for name in ("PULSE_SERVER", "XDG_RUNTIME_DIR"):
            _SAVED_ENV[name] = os.environ.get(name)
            os.environ[name] = server.env[name]
        sd._terminate()  # re-scan: PortAudio lists the `pulse` device only if the server
        sd._initialize()  # was reachable when it initialised
        server.warm_up()
    except Exception as error:
        server.stop()
        require("a PulseAudio null-sink virtual microphone", False, str(error))
        raise
    return server


def _shutdown() -> None:
    global _SERVER
    if _SERVER is None:
        return
    _SERVER.stop()
    _SERVER = None
    for name, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def virtual_mic(request: pytest.FixtureRequest) -> VirtualMic:
    """The running virtual microphone (started once per test process, restarted if killed)."""
    global _SERVER
    if _SERVER is None:
        _SERVER = _start_server()
        request.config.add_cleanup(_shutdown)
    else:
        _SERVER.ensure_running()
    return _SERVER
