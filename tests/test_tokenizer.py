"""The tokenizer rebuilt from `tokenizer.bin` must behave exactly like Moonshine's tokenizer.json.

The reference JSON comes from the PyPI wheel `useful-moonshine-onnx`, downloaded once into
tests/.generated/ref/ (gitignored). Without network the reference tests skip, or fail in CI.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tokenizers
from conftest import GENERATED_DIR, require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moonshine_live.errors import WeightsError
from moonshine_live.model.tokenizer import (
    FIRST_TEXT_ID,
    PIECE_COUNT,
    VOCAB_SIZE,
    Tokenizer,
    bundled_tokenizer_bin,
    read_tokenizer_bin,
    tokenizer_from_bin,
)

REFERENCE_WHEEL = "useful-moonshine-onnx==20251121"
REFERENCE_MEMBER = "moonshine_onnx/assets/tokenizer.json"
REFERENCE_DIR = GENERATED_DIR / "ref"
SEED = 20240601

BECKETT_TEXT = "Ever tried ever failed, no matter try again fail again fail better."
BECKETT_IDS = [18274, 1898, 3926, 5229, 29892, 694, 4383, 1018, 1449, 4418, 1449, 4418, 2253, 29889]
"""Greedy transcript of moonshine_cpp's beckett.wav (shared/notes/weights.md), without <s> </s>."""

TRICKY = [
    "",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "a",
    " a",
    "a ",
    "  leading two",
    "trailing two  ",
    "double  space  inside",
    "triple   space   inside",
    "set the volume to 40%",
    "Set the volume to 40 %.",
    "turn on the kitchen lights",
    "Turn OFF the Living-Room lights!",
    "what's the time?",
    "open firefox, then close it.",
    "call +1 (555) 010-2030 at 7:45pm",
    "3.14159 2,718 1e-9 0x1F -42",
    "2024-06-01T12:00:00Z",
    "café naïve résumé façade über Ærø",
    "Crème brûlée à la carte",
    "日本語のテキスト",
    "中文测试，标点。",
    "한국어 문장",
    "Привет, мир",
    "مرحبا بالعالم",
    "emoji 😀👍🏽 and flags 🇫🇷",
    "tab\tseparated\tvalues",
    "line one\nline two\r\nline three",
    "mixed \t\n whitespace",
    "quotes \"double\" and 'single' and `back`",
    "brackets [x] {y} <z> (w)",
    "<s> not a bos </s>",
    "<unk> <<ST_5>>",
    "the ▁ marker itself ▁▁",
    "zero\x00byte and \x07 bell",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "supercalifragilisticexpialidocious",
    "ALL CAPS SENTENCE HERE",
    "hyphen-ated and under_scored and slash/separated",
    "   ",
    "....!!!???",
    "~!@#$%^&*()_+-=[]\\{}|;':\",./<>?",
    "\u00a0non-breaking\u00a0space",
    "zero\u200bwidth\u200bspace",
    "combining e\u0301 vs é",
    BECKETT_TEXT,
]
SEPARATORS = [" ", " ", " ", "  ", "   ", "\t", "\n", ", ", ". ", "! ", "? ", "-", ""]
EXTRA_CHARS = list("0123456789%$€£.,;:!?'\"()-_/éèàüöñçåøß日本中文한글😀🎉✓→ \t\n")


@pytest.fixture(scope="session")
def bin_path() -> Path:
    try:
        return bundled_tokenizer_bin()
    except WeightsError as exc:
        require("moonshine-cpp tokenizer.bin", False, str(exc))
        raise


@pytest.fixture(scope="session")
def reference_json() -> Path:
    """Moonshine's published tokenizer.json, downloaded once and cached."""
    target = REFERENCE_DIR / "tokenizer.json"
    if not target.is_file():
        error = _download_reference(target)
        require("reference tokenizer.json", target.is_file(), error)
    return target


def _download_reference(target: Path) -> str:
    """Fetch the wheel with pip and extract only the JSON; returns the error text, if any."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", REFERENCE_WHEEL]
        try:
            done = subprocess.run(
                [*command, "-d", tmp], capture_output=True, text=True, timeout=300, check=False
            )
        except subprocess.TimeoutExpired:
            return "pip download timed out"
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            return f"pip download {REFERENCE_WHEEL} failed: {done.stderr.strip()[-500:]}"
        partial = target.with_suffix(".part")
        with zipfile.ZipFile(wheels[0]) as wheel:
            partial.write_bytes(wheel.read(REFERENCE_MEMBER))
        partial.replace(target)
    return ""


@pytest.fixture(scope="session")
def ours(bin_path: Path) -> Tokenizer:
    return Tokenizer.from_bin(bin_path)


@pytest.fixture(scope="session")
def reference(reference_json: Path) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(reference_json))


@pytest.fixture(scope="session")
def sentences(reference: tokenizers.Tokenizer) -> list[str]:
    rng = random.Random(SEED)
    generated = [_random_sentence(rng, reference) for _ in range(1200)]
    return TRICKY + generated


def _random_sentence(rng: random.Random, reference: tokenizers.Tokenizer) -> str:
    """Words decoded from random vocabulary pieces, joined by odd separators and extras."""
    parts: list[str] = []
    for _ in range(rng.randint(1, 8)):
        word = reference.decode([rng.randrange(FIRST_TEXT_ID, PIECE_COUNT)]).strip()
        if rng.random() < 0.2:
            word = word.upper() if rng.random() < 0.5 else word.capitalize()
        if rng.random() < 0.15:
            word += "".join(rng.choices(EXTRA_CHARS, k=rng.randint(1, 3)))
        parts.extend([word, rng.choice(SEPARATORS)])
    text = "".join(parts[:-1])
    if rng.random() < 0.1:
        text = " " * rng.randint(1, 3) + text
    if rng.random() < 0.1:
        text += " " * rng.randint(1, 3)
    return text


def _random_ids(rng: random.Random) -> list[int]:
    """Ids weighted towards text pieces, with bytes (partial UTF-8 too) and specials mixed in."""
    pools = [(FIRST_TEXT_ID, PIECE_COUNT), (3, FIRST_TEXT_ID), (0, 3), (PIECE_COUNT, VOCAB_SIZE)]
    weights = [0.7, 0.15, 0.1, 0.05]
    ids = []
    for _ in range(rng.randint(0, 20)):
        low, high = rng.choices(pools, weights)[0]
        ids.append(rng.randrange(low, high))
    return ids


def _canonical(tokenizer_json: dict) -> dict:
    """The JSON with merges as pairs: tokenizers writes "a b" strings or [a, b] lists by version."""
    merges = tokenizer_json["model"]["merges"]
    tokenizer_json["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in merges]
    return tokenizer_json


# --- behaviour without the reference -------------------------------------------------------


def test_read_tokenizer_bin_gives_named_pieces(bin_path: Path) -> None:
    pieces = read_tokenizer_bin(bin_path)
    assert len(pieces) == PIECE_COUNT
    assert pieces[:4] == [b"<unk>", b"<s>", b"</s>", b"<0x00>"]
    assert pieces[3 + 0x41] == b"<0x41>"
    assert pieces[258] == b"<0xFF>"
    assert pieces[259] == "\u2581\u2581".encode()


def test_api_basics(ours: Tokenizer) -> None:
    assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (1, 2, VOCAB_SIZE)
    assert [ours.piece(i) for i in (0, 1, 2, 3, 260)] == ["<unk>", "<s>", "</s>", "<0x00>", "▁t"]
    assert ours.piece(VOCAB_SIZE - 1) == "<<ST_767>>"
    with pytest.raises(IndexError):
        ours.piece(VOCAB_SIZE)


def test_beckett_transcript_ids(ours: Tokenizer) -> None:
    assert ours.encode(BECKETT_TEXT) == BECKETT_IDS
    assert ours.decode([ours.bos_id, *BECKETT_IDS, ours.eos_id]) == BECKETT_TEXT


def test_save_and_load_round_trip(ours: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    ours.save(path)
    loaded = Tokenizer.from_file(path)
    assert loaded.backend.to_str() == ours.backend.to_str()
    assert loaded.encode(BECKETT_TEXT) == BECKETT_IDS


def test_build_is_fast(bin_path: Path) -> None:
    import time

    start = time.perf_counter()
    tokenizer_from_bin(bin_path)
    assert time.perf_counter() - start < 3.0  # about 0.4 s on the 2-core CI machine


def _write_pieces(path: Path, pieces: list[bytes]) -> Path:
    path.write_bytes(b"".join(bytes([len(p)]) + p for p in pieces))
    return path


def _raw_pieces() -> list[bytes]:
    pieces = [b"<unk>", b"<s>", b"</s>", *(bytes([b]) for b in range(256))]
    return pieces + [f"p{i}".encode() for i in range(PIECE_COUNT - len(pieces))]


def test_truncated_file_names_the_file(bin_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.bin"
    path.write_bytes(bin_path.read_bytes()[:-3])
    with pytest.raises(WeightsError, match=r"cut\.bin.*truncated"):
        read_tokenizer_bin(path)
    with pytest.raises(WeightsError, match=r"cut\.bin"):
        Tokenizer.from_bin(path)


@pytest.mark.parametrize(
    ("pieces", "message"),
    [
        (_raw_pieces()[:-1], "31999 pieces, expected 32000"),
        ([*_raw_pieces(), b"x"], "32001 pieces, expected 32000"),
        ([b"<pad>", *_raw_pieces()[1:]], "piece 0 is b'<pad>', expected <unk>"),
        ([*_raw_pieces()[:10], b"\x08\x08", *_raw_pieces()[11:]], "piece 10 should be"),
        ([*_raw_pieces()[:-1], b"\xff\xfe"], "not valid UTF-8"),
        ([*_raw_pieces()[:-1], b"p0"], "duplicate"),
    ],
)
def test_bad_file_is_reported(pieces: list[bytes], message: str, tmp_path: Path) -> None:
    path = _write_pieces(tmp_path / "bad.bin", pieces)
    with pytest.raises(WeightsError, match=r"bad\.bin") as raised:
        tokenizer_from_bin(path)
    assert message in str(raised.value)


def test_missing_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nope\.bin"):
        read_tokenizer_bin(tmp_path / "nope.bin")
    with pytest.raises(WeightsError, match=r"nope\.json"):
        Tokenizer.from_file(tmp_path / "nope.json")


def test_invalid_json_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"version": "1.0", "model": ')
    with pytest.raises(WeightsError, match=r"broken\.json"):
        Tokenizer.from_file(path)


def test_wrong_vocab_size_is_reported(tmp_path: Path) -> None:
    small = tokenizers.Tokenizer(tokenizers.models.BPE({"<unk>": 0, "<s>": 1, "</s>": 2}, []))
    path = tmp_path / "small.json"
    small.save(str(path))
    with pytest.raises(WeightsError, match=r"small\.json: vocab size 3"):
        Tokenizer.from_file(path)


# --- equality with the published tokenizer.json --------------------------------------------


def test_json_matches_reference(ours: Tokenizer, reference_json: Path) -> None:
    mine = _canonical(json.loads(ours.backend.to_str()))
    theirs = _canonical(json.loads(reference_json.read_text(encoding="utf-8")))
    assert mine["model"]["merges"] == theirs["model"]["merges"]
    assert mine == theirs


def test_reference_loads_through_wrapper(reference_json: Path) -> None:
    loaded = Tokenizer.from_file(reference_json)
    assert loaded.encode(BECKETT_TEXT) == BECKETT_IDS


def test_encode_matches_reference(
    ours: Tokenizer, reference: tokenizers.Tokenizer, sentences: list[str]
) -> None:
    assert len(sentences) >= 1000
    for text in sentences:
        assert ours.encode(text) == reference.encode(text, add_special_tokens=False).ids, text


def test_decode_of_encoded_matches_reference(
    ours: Tokenizer, reference: tokenizers.Tokenizer, sentences: list[str]
) -> None:
    for text in sentences:
        ids = ours.encode(text)
        assert ours.decode(ids) == reference.decode(ids), text


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_decode_random_ids_matches_reference(
    ours: Tokenizer, reference: tokenizers.Tokenizer, skip_special_tokens: bool
) -> None:
    rng = random.Random(SEED + skip_special_tokens)
    for _ in range(1000):
        ids = _random_ids(rng)
        expected = reference.decode(ids, skip_special_tokens=skip_special_tokens)
        assert ours.decode(ids, skip_special_tokens=skip_special_tokens) == expected, ids


def test_pieces_match_reference(ours: Tokenizer, reference: tokenizers.Tokenizer) -> None:
    assert reference.get_vocab_size(with_added_tokens=True) == VOCAB_SIZE
    assert [ours.piece(i) for i in range(VOCAB_SIZE)] == [
        reference.id_to_token(i) for i in range(VOCAB_SIZE)
    ]


_VOCAB_WORDS = st.integers(FIRST_TEXT_ID, PIECE_COUNT - 1)
_TEXTS = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(" abcdeéXYZ019.,!?▁\t\n日😀<>/s"), max_size=40),
    st.lists(st.tuples(_VOCAB_WORDS, st.sampled_from(SEPARATORS)), max_size=6),
)


@dataclass(frozen=True)
class _Both:
    """Both tokenizers as one argument with a short repr, for hypothesis' failure reports."""

    ours: Tokenizer
    reference: tokenizers.Tokenizer = field(repr=False)


@pytest.fixture(scope="session")
def both(ours: Tokenizer, reference: tokenizers.Tokenizer) -> _Both:
    return _Both(ours, reference)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXTS)
def test_round_trip_where_reference_does(both: _Both, text: str | list[tuple[int, str]]) -> None:
    ours, reference = both.ours, both.reference
    if isinstance(text, list):
        text = "".join(reference.decode([word]) + sep for word, sep in text)
    ids = ours.encode(text)
    assert ids == reference.encode(text, add_special_tokens=False).ids
    if reference.decode(ids) == text:
        assert ours.decode(ids) == text
