"""A verifying, resuming downloader: https only (loopback http for tests and local mirrors),
redirects checked, the declared size never exceeded, SHA-256 checked before a file is used.

Shared by the model registry and the real validation scan, so that anything fetched from outside
goes through one audited path."""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from .errors import DownloadError
from .files import file_lock, sha256_file

CHUNK = 1 << 16
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_DEADLINE_S = 1800.0  # a whole download; a 10 MB model needs seconds on any working link


def check_url(url: str) -> str:
    """https only (plain http to this machine's loopback, for tests and local mirrors)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK):
        return url
    raise DownloadError(f"refusing to download from {url}: only https:// addresses are allowed")


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (release downloads redirect to a file host) only to allowed addresses."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(urllib.parse.urljoin(req.full_url, newurl))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SafeRedirects())


def download_verified(url: str, target: Path, size: int, sha256: str, name: str,
                      progress: Optional[Callable[[int, int], None]] = None, retries: int = 3,
                      timeout: float = 30.0, deadline_s: float = DEFAULT_DEADLINE_S,
                      what: str = "its record") -> Path:
    """Download ``url`` to ``target``, resuming a partial file, verifying size and SHA-256.

    One process at a time per file (an OS lock beside it); a process that waited finds the file
    another one finished. Never reads past the declared size; gives up after ``deadline_s``.
    ``what`` names where the expected size and digest come from, for the error."""
    check_url(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with file_lock(target.with_name(target.name + ".lock")):
        if target.is_file() and target.stat().st_size == size and sha256_file(target) == sha256:
            return target  # finished by another process while this one waited
        last_error = ""
        stop_at = time.monotonic() + deadline_s
        for _ in range(max(1, retries)):
            try:
                _fetch(url, part, size, progress, timeout, stop_at)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                last_error = str(getattr(e, "reason", e))
                continue
            if part.stat().st_size < size:
                last_error = f"connection ended at {part.stat().st_size} of {size} bytes"
                continue
            break
        else:
            kept = (f"; the partial file {part} is kept and the next attempt resumes it"
                    if part.is_file() and part.stat().st_size else "")
            raise DownloadError(f"download of {name} from {url} failed ({last_error}){kept}")
        have = part.stat().st_size
        digest = sha256_file(part)
        if have != size or digest != sha256:
            part.unlink()
            raise DownloadError(f"downloaded {name} does not match {what} (size {have} vs "
                                f"{size}, SHA-256 {digest[:12]}... vs {sha256[:12]}...); "
                                "the file was deleted and not used")
        os.replace(part, target)
    return target


def _fetch(url: str, part: Path, size: int, progress: Optional[Callable[[int, int], None]],
           timeout: float, stop_at: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    if have == size:
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with _OPENER.open(request, timeout=timeout) as response:
        if have and response.status != 206:  # server ignored the range: start again
            have = 0
        with open(part, "ab" if have else "wb") as f:
            while have < size:
                if time.monotonic() > stop_at:
                    raise DownloadError(f"download from {url} did not finish in time ({have} of {size} bytes; "
                                        "the server is too slow); the partial file is kept, try again later")
                block = response.read1(min(CHUNK, size - have))  # what has arrived: the deadline is checked often
                if not block:
                    break
                f.write(block)
                have += len(block)
                if progress is not None:
                    progress(have, size)
            if have >= size and response.read(1):
                raise DownloadError(f"{url} sends more than the {size} bytes expected; the download was "
                                    "stopped at that size")
