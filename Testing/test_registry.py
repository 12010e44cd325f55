"""The downloader against a real HTTP server on 127.0.0.1: verify, resume, refuse."""

import hashlib
import http.server
import json
import threading

import pytest

from BoneSegmentationLib.core.errors import DownloadError, ModelFileError
from BoneSegmentationLib.model.registry import (
    ModelEntry, cache_dir, download, find_entry, load_registry, local_copy, resolve_model, sha256_of)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD with HTTP Range support; can cut the first response short."""

    payload = PAYLOAD
    cut_first_at = None  # bytes after which the first transfer is dropped
    log = []

    def do_GET(self):
        rng = self.headers.get("Range")
        type(self).log.append(rng)
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = self.payload[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_first_at is not None:
            cut, type(self).cut_first_at = type(self).cut_first_at, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)  # drop the connection mid-transfer
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    RangeHandler.log = []
    RangeHandler.cut_first_at = None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def entry(url, payload=PAYLOAD, **kw):
    return ModelEntry(name="m", version="1", url=f"{url}/m.pt", sha256=hashlib.sha256(payload).hexdigest(),
                      size=len(payload), **kw)


def test_download_verifies_and_reports_progress(server, tmp_path):
    seen = []
    path = download(entry(server), cache=tmp_path, progress=lambda have, total: seen.append((have, total)))
    assert path.read_bytes() == PAYLOAD and sha256_of(path) == entry(server).sha256
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert RangeHandler.log == [None]
    assert not list(tmp_path.glob("*.part"))


def test_resume_from_partial_file(server, tmp_path):
    e = entry(server)
    part = tmp_path / (e.file_name + ".part")
    part.write_bytes(PAYLOAD[:300_000])
    path = download(e, cache=tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert RangeHandler.log == ["bytes=300000-"], "only the missing bytes must be requested"


def test_dropped_connection_resumes_automatically(server, tmp_path):
    RangeHandler.cut_first_at = 400_000
    path = download(entry(server), cache=tmp_path, retries=3)
    assert path.read_bytes() == PAYLOAD
    assert RangeHandler.log[0] is None and RangeHandler.log[1] == "bytes=400000-"


def test_checksum_mismatch_is_refused_and_deleted(server, tmp_path):
    bad = ModelEntry(name="m", version="1", url=f"{server}/m.pt", sha256="0" * 64, size=len(PAYLOAD))
    with pytest.raises(DownloadError, match="does not match the registry"):
        download(bad, cache=tmp_path)
    kept = [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]  # the empty lock file stays
    assert not kept, "a mismatching file must not be kept"


def test_unreachable_server_keeps_partial_and_says_so(tmp_path):
    e = ModelEntry(name="m", version="1", url="http://127.0.0.1:9/m.pt", sha256="0" * 64, size=10)
    with pytest.raises(DownloadError, match="failed .*Connection refused") as info:
        download(e, cache=tmp_path, retries=1, timeout=2)
    assert "partial file" not in str(info.value)  # there is none to claim
    (tmp_path / "m-1.pt.part").write_bytes(b"12345")
    with pytest.raises(DownloadError, match="failed .*next attempt resumes"):
        download(e, cache=tmp_path, retries=1, timeout=2)


def test_resolve_model_uses_cache_without_network(server, tmp_path, monkeypatch):
    e = entry(server)
    registry = tmp_path / "models.json"
    registry.write_text(json.dumps({"models": [e.__dict__]}))
    monkeypatch.setattr("BoneSegmentationLib.model.registry.registry_path", lambda: registry)
    cache = tmp_path / "cache"
    first = resolve_model("m", cache=cache)
    assert first.read_bytes() == PAYLOAD and len(RangeHandler.log) == 1
    assert resolve_model("m-1", cache=cache) == first and len(RangeHandler.log) == 1
    assert local_copy(e, cache) == first
    with pytest.raises(ModelFileError, match="neither a model file nor a registered model"):
        resolve_model("unknown-model", cache=cache)
    with pytest.raises(ModelFileError, match="not found"):
        resolve_model(str(tmp_path / "missing.pt"), cache=cache)


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("BONESEGMENTATION_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path


def test_shipped_registry_entries_are_consistent():
    for e in load_registry():
        assert len(e.sha256) == 64 and e.size > 0 and e.url.startswith("https://")
        if e.bundled:
            path = local_copy(e)
            assert path is not None, f"bundled model {e.bundled} missing or checksum differs"
        assert find_entry(e.name) == e


def test_install_bundled_copies_and_lists_the_model(monkeypatch, tmp_path):
    """The recipes' install step: the file lands in Resources/ and models.json lists its checksum,
    replacing the old entry of that name and keeping the others."""
    from BoneSegmentationLib.model import registry

    resources = tmp_path / "Resources"
    resources.mkdir()
    (resources / "models.json").write_text(json.dumps({"models": [
        {"name": "demo", "version": "0.1", "url": "https://x/0.1", "sha256": "0" * 64, "size": 1},
        {"name": "other", "version": "1", "url": "https://x/1", "sha256": "1" * 64, "size": 1}]}))
    monkeypatch.setattr(registry, "resource_path", lambda name: resources / name)
    model = tmp_path / "new.pt"
    model.write_bytes(PAYLOAD)
    entry = registry.install_bundled(model, "demo", "0.2", "a better one")
    assert (resources / "demo.pt").read_bytes() == PAYLOAD
    listed = json.loads((resources / "models.json").read_text())["models"]
    assert [m["name"] for m in listed] == ["other", "demo"]
    assert listed[1]["sha256"] == hashlib.sha256(PAYLOAD).hexdigest() == entry.sha256
    assert listed[1]["url"].endswith("/v0.2/demo-0.2.pt") and listed[1]["bundled"] == "demo.pt"
    assert not [p for p in resources.iterdir() if p.name.startswith(".")]  # no temp files left
