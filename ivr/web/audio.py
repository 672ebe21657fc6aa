"""Recordings and voicemail played in the console: a sealed file streamed as a WAV a chunk at a time, with
byte ranges (an ``<audio>`` element seeks with them), so a long recording costs one chunk of memory."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from flask import abort, request, send_file
from werkzeug.datastructures import ContentRange
from werkzeug.wrappers import Response

from ivr.errors import IvrError
from ivr.store.crypto import Sealer
from ivr.store.sealed_audio import SealedAudio, SealedAudioError, is_sealed_audio, open_sealed_audio, wav_header

log = logging.getLogger(__name__)


def requested_range(length: int) -> tuple[int, int] | None:
    """The one byte range [start, stop) of ``length`` bytes the request asks for, or None for everything
    (no ``Range``, one that cannot be read, several ranges, or an ``If-Range`` we cannot check: the whole
    file is a correct answer to each). A range that starts past the end is a 416."""
    if "Range" not in request.headers or "If-Range" in request.headers:
        return None
    asked = request.range
    if asked is None or asked.units != "bytes" or len(asked.ranges) != 1:
        return None
    found = asked.range_for_length(length)
    if found is None:
        unsatisfiable = Response(status=416)
        unsatisfiable.content_range = ContentRange("bytes", None, None, length)
        abort(unsatisfiable)
    return found


def _wav_stream(audio: SealedAudio, header: bytes, start: int, stop: int) -> Iterator[bytes]:
    try:
        if start < len(header):
            yield header[start:stop]
        pcm_start, pcm_stop = max(start - len(header), 0), stop - len(header)
        if pcm_stop > pcm_start:
            yield from audio.pcm(pcm_start, pcm_stop)
    except IvrError as exc:
        # headers are gone already: the connection is dropped, so the player sees the answer cut short
        log.error("recording %s stopped while playing: %s", audio.path, exc)
        raise
    finally:
        audio.close()


def audio_response(path: Path, sealer: Sealer) -> Response:
    """A recording as WAV, never cached: a sealed file streamed (a ``Range`` request gets 206 and those
    bytes), or an older plain WAV file. A file that cannot be opened, is incomplete or was changed is a 500
    that says so; a chunk found changed while streaming ends the answer early."""
    if is_sealed_audio(path):
        try:
            audio = open_sealed_audio(path, sealer)
        except (SealedAudioError, IvrError) as exc:
            log.error("recording %s cannot be played: %s", path, exc)
            abort(500, f"the recording cannot be played ({exc})")
        try:
            header = wav_header(audio.pcm_size, audio.rate)
            length = len(header) + audio.pcm_size
            part = requested_range(length)
        except SealedAudioError as exc:
            audio.close()
            log.error("recording %s cannot be played: %s", path, exc)
            abort(500, f"the recording cannot be played ({exc})")
        except BaseException:
            audio.close()
            raise
        start, stop = part or (0, length)
        resp = Response(_wav_stream(audio, header, start, stop), status=206 if part else 200, mimetype="audio/wav",
                        direct_passthrough=True)  # fmt: skip
        resp.call_on_close(audio.close)
        resp.content_length = stop - start
        if part:
            resp.content_range = ContentRange("bytes", start, stop, length)
        resp.accept_ranges = "bytes"
    elif path.suffix.lower() == ".wav" and path.is_file():
        resp = send_file(path.resolve(), mimetype="audio/wav", conditional=True, max_age=0)
    else:
        abort(404)
    resp.headers["Cache-Control"] = "no-store"
    return resp
