"""The word list of a Vosk (Kaldi) model directory, so grammars only use words the model knows.

Static-graph models ship ``graph/words.txt``; small "lookahead" models (the ones that accept runtime
grammars) keep the word list as the symbol table embedded in ``graph/Gr.fst``. Reading it needs only
the OpenFst file header, not the whole FST.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from ivr.errors import ModelError

_FST_MAGIC = 2125659606
_SYMTAB_MAGIC = 2125658996
_HAS_ISYMBOLS = 1
_MAX_STRING = 1 << 20


def _read(fh: BinaryIO, fmt: str) -> int:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise EOFError
    return int(struct.unpack(fmt, data)[0])


def _read_string(fh: BinaryIO) -> str:
    size = _read(fh, "<i")
    if not 0 <= size <= _MAX_STRING:
        raise ValueError(f"bad string length {size}")
    return fh.read(size).decode("utf-8", "replace")


def _fst_input_symbols(path: Path) -> list[str]:
    with path.open("rb") as fh:
        if _read(fh, "<i") != _FST_MAGIC:
            raise ValueError("not an OpenFst file")
        _read_string(fh)  # fst type
        _read_string(fh)  # arc type
        _read(fh, "<i")  # version
        flags = _read(fh, "<i")
        fh.read(8 * 4)  # properties, start, number of states, number of arcs
        if not flags & _HAS_ISYMBOLS:
            raise ValueError("the FST has no embedded symbol table")
        if _read(fh, "<i") != _SYMTAB_MAGIC:
            raise ValueError("bad symbol table")
        _read_string(fh)  # table name
        _read(fh, "<q")  # available key
        count = _read(fh, "<q")
        words = []
        for _ in range(count):
            words.append(_read_string(fh))
            _read(fh, "<q")
        return words


def read_vocabulary(model_dir: str | Path) -> frozenset[str]:
    """All words of the Vosk model at ``model_dir``; empty when the model has no readable word list."""
    graph = Path(model_dir) / "graph"
    words_txt = graph / "words.txt"
    try:
        if words_txt.is_file():
            with words_txt.open(encoding="utf-8", errors="replace") as fh:
                return frozenset(line.split()[0] for line in fh if line.strip())
        gr = graph / "Gr.fst"
        if gr.is_file():
            return frozenset(_fst_input_symbols(gr))
    except (OSError, EOFError, ValueError) as exc:
        raise ModelError(f"{model_dir}: cannot read the model's word list ({exc}); the model may be damaged") from None
    return frozenset()


def supports_runtime_grammar(model_dir: str | Path) -> bool:
    """True for lookahead models (``HCLr.fst`` + ``Gr.fst``): only those can be limited to phrases."""
    graph = Path(model_dir) / "graph"
    return (graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file()
