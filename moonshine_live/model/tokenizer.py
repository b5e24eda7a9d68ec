"""Moonshine's text tokenizer: ids <-> text, and the piece table the grammar constraint needs.

The model ships its vocabulary only as `tokenizer.bin` (in the `moonshine-cpp` wheel). We rebuild
from it the same Hugging Face `tokenizers` BPE that Moonshine publishes as `tokenizer.json`, so
no second download is needed. The facts used here are in shared/notes/weights.md ("Tokenizer").
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, normalizers, processors

from moonshine_live.errors import WeightsError

_LOGGER = logging.getLogger(__name__)

PIECE_COUNT = 32000
"""Pieces stored in `tokenizer.bin`: the BPE model's own vocabulary."""
VOCAB_SIZE = 32768
"""The Moonshine model's vocabulary: the pieces plus 768 unused `<<ST_n>>` special tokens."""
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
CONTROL_PIECES = ("<unk>", "<s>", "</s>")
"""Ids 0, 1, 2 of the vocabulary, in that order."""
FIRST_BYTE_ID = 3
"""`<0x00>`..`<0xFF>` are ids 3..258; `tokenizer.bin` stores each as its single raw byte."""
FIRST_TEXT_ID = FIRST_BYTE_ID + 256
SPACE = "\u2581"
"""SentencePiece's word marker `▁`, which stands for a space inside pieces."""
BUNDLED_BIN = Path("models", "base-en", "tokenizer.bin")
"""Where `tokenizer.bin` sits inside the installed `moonshine_cpp` package folder."""


def bundled_tokenizer_bin() -> Path:
    """Path of the `tokenizer.bin` shipped in the `moonshine-cpp` wheel.

    Found through the import system's spec so the package is never imported: its native
    library crashes CPUs without the instructions it was built for.
    """
    spec = importlib.util.find_spec("moonshine_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("package moonshine-cpp is not installed; it ships tokenizer.bin")
    path = Path(spec.submodule_search_locations[0]) / BUNDLED_BIN
    if not path.is_file():
        raise WeightsError(f"{path}: tokenizer.bin missing from the moonshine-cpp package")
    return path


def read_tokenizer_bin(path: Path) -> list[bytes]:
    """The 32000 pieces of `tokenizer.bin` in id order, byte pieces renamed `<0xNN>`.

    Bytes, not str: the file is raw and only the caller knows how to report bad UTF-8.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read tokenizer.bin ({exc.strerror})") from exc
    pieces = _split_pieces(data, path)
    if len(pieces) != PIECE_COUNT:
        raise WeightsError(f"{path}: {len(pieces)} pieces, expected {PIECE_COUNT}")
    _check_reserved_pieces(pieces, path)
    for byte in range(256):
        pieces[FIRST_BYTE_ID + byte] = f"<0x{byte:02X}>".encode()
    return pieces


def _split_pieces(data: bytes, path: Path) -> list[bytes]:
    """Cut `data` into its length-prefixed records; a record running past the end is an error."""
    pieces: list[bytes] = []
    offset = 0
    while offset < len(data):
        end = offset + 1 + data[offset]
        if end > len(data):
            raise WeightsError(
                f"{path}: truncated: piece {len(pieces)} needs bytes up to {end}, "
                f"file has {len(data)}"
            )
        pieces.append(data[offset + 1 : end])
        offset = end
    return pieces


def _check_reserved_pieces(pieces: list[bytes], path: Path) -> None:
    """Ids 0..258 are fixed by the format; anything else means a different or corrupt file."""
    for piece_id, name in enumerate(CONTROL_PIECES):
        if pieces[piece_id] != name.encode():
            raise WeightsError(f"{path}: piece {piece_id} is {pieces[piece_id]!r}, expected {name}")
    for byte in range(256):
        if pieces[FIRST_BYTE_ID + byte] != bytes([byte]):
            raise WeightsError(
                f"{path}: piece {FIRST_BYTE_ID + byte} should be the raw byte 0x{byte:02X}"
            )


def tokenizer_from_bin(path: Path) -> tokenizers.Tokenizer:
    """Rebuild Moonshine's published `tokenizer.json` from `tokenizer.bin` alone."""
    start = time.perf_counter()
    names = _piece_names(read_tokenizer_bin(path), path)
    vocab = {name: piece_id for piece_id, name in enumerate(names)}
    if len(vocab) != len(names):
        raise WeightsError(f"{path}: duplicate pieces in tokenizer.bin")
    model = models.BPE(
        vocab=vocab,
        merges=rebuild_merges(names),
        unk_token=CONTROL_PIECES[UNK_ID],
        fuse_unk=True,
        byte_fallback=True,
    )
    tokenizer = _assemble(model)
    _LOGGER.debug("built tokenizer from %s in %.3f s", path, time.perf_counter() - start)
    return tokenizer


def _piece_names(pieces: list[bytes], path: Path) -> list[str]:
    try:
        return [piece.decode("utf-8") for piece in pieces]
    except UnicodeDecodeError as exc:
        raise WeightsError(f"{path}: a piece is not valid UTF-8 ({exc})") from exc


def rebuild_merges(names: list[str]) -> list[tuple[str, str]]:
    """BPE merges implied by the vocabulary order (rule in shared/notes/weights.md).

    (a, b) is a merge when a, b and a+b are text pieces; merges rank by the id of a+b, then
    (id a, id b). Merges producing only `▁` go last, as in the published tokenizer.json: ranked
    by id instead, they change how text with double spaces encodes.
    """
    text_ids = {name: piece_id for piece_id, name in enumerate(names) if piece_id >= FIRST_TEXT_ID}
    merges: list[tuple[str, str]] = []
    space_merges: list[tuple[str, str]] = []
    for name in names[FIRST_TEXT_ID:]:
        splits = sorted(_splits(name, text_ids))
        target = space_merges if name.strip(SPACE) == "" else merges
        target.extend((names[left], names[right]) for left, right in splits)
    return merges + space_merges


def _splits(name: str, text_ids: dict[str, int]) -> Iterable[tuple[int, int]]:
    """(id left, id right) for every cut of `name` into two pieces of the vocabulary."""
    for cut in range(1, len(name)):
        left = text_ids.get(name[:cut])
        right = text_ids.get(name[cut:])
        if left is not None and right is not None:
            yield left, right


def _assemble(model: models.BPE) -> tokenizers.Tokenizer:
    """Wrap the BPE model with the normalizer, decoder and specials of Moonshine's JSON."""
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)]
    )
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace(SPACE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    bos = CONTROL_PIECES[BOS_ID]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, BOS_ID)]
    )
    specials = [*CONTROL_PIECES, *(f"<<ST_{n}>>" for n in range(VOCAB_SIZE - PIECE_COUNT))]
    tokenizer.add_special_tokens(
        [tokenizers.AddedToken(token, normalized=False, special=True) for token in specials]
    )
    return tokenizer


@dataclass(frozen=True)
class Tokenizer:
    """Moonshine's tokenizer: plain ids in and out, no `<s>` added, specials skipped on decode."""

    backend: tokenizers.Tokenizer = field(repr=False)  # its repr lists the whole vocabulary
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    @classmethod
    def from_file(cls, path: Path) -> Tokenizer:
        """Load a `tokenizer.json` (as written by `save` or published by Moonshine)."""
        if not Path(path).is_file():
            raise WeightsError(f"{path}: tokenizer.json not found")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for bad JSON
            raise WeightsError(f"{path}: not a valid tokenizer.json ({exc})") from exc
        return cls._checked(backend, path)

    @classmethod
    def from_bin(cls, path: Path | None = None) -> Tokenizer:
        """Build from `tokenizer.bin`, by default the one in the moonshine-cpp wheel."""
        path = bundled_tokenizer_bin() if path is None else path
        return cls._checked(tokenizer_from_bin(path), path)

    @classmethod
    def _checked(cls, backend: tokenizers.Tokenizer, path: Path) -> Tokenizer:
        """Refuse a tokenizer whose size or `<s>`/`</s>` ids do not fit the model."""
        size = backend.get_vocab_size(with_added_tokens=True)
        bos, eos = CONTROL_PIECES[BOS_ID], CONTROL_PIECES[EOS_ID]
        found = (backend.token_to_id(bos), backend.token_to_id(eos))
        if size != VOCAB_SIZE or found != (BOS_ID, EOS_ID):
            raise WeightsError(
                f"{path}: vocab size {size} with {bos}/{eos} at ids {found}; the model needs "
                f"{VOCAB_SIZE} with ids {(BOS_ID, EOS_ID)}"
            )
        return cls(backend)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Ids of `text` without `<s>`: the decoder prompt adds it itself."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; plain ints so numpy or torch scalars from the decoder work too."""
        ids = [int(token_id) for token_id in ids]
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def piece(self, token_id: int) -> str:
        """The vocabulary entry of `token_id`, e.g. `▁the` or `<0x0A>`."""
        name = self.backend.id_to_token(token_id)
        if name is None:
            raise IndexError(f"token id {token_id} outside the vocabulary of {self.vocab_size}")
        return name

    def save(self, path: Path) -> None:
        """Write the tokenizer as `tokenizer.json`, loadable again with `from_file`."""
        self.backend.save(str(path))
