"""The downloader: checksum verified, progress, and never a half-written file.

Served from 127.0.0.1 or file:// only; nothing here touches the internet.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from former.data import ChecksumError, DownloadError
from former.data.locate import download_file

CONTENT = bytes(range(256)) * 4096  # 1 MiB: several chunks


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Base URL of an HTTP server on 127.0.0.1 serving archive.bin."""
    folder = tmp_path_factory.mktemp("served")
    (folder / "archive.bin").write_bytes(CONTENT)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_download_with_right_checksum_lands_at_destination(served, tmp_path):
    destination = tmp_path / "out" / "archive.bin"
    result = download_file(
        f"{served}/archive.bin",
        destination,
        sha256=hashlib.sha256(CONTENT).hexdigest(),
        size=len(CONTENT),
    )
    assert result == destination and destination.read_bytes() == CONTENT
    assert leftovers(destination.parent) == ["archive.bin"]  # no temporary file left


def test_wrong_checksum_keeps_nothing(served, tmp_path):
    destination = tmp_path / "archive.bin"
    with pytest.raises(ChecksumError, match="sha256.*expected 0000.*Nothing was kept"):
        download_file(f"{served}/archive.bin", destination, sha256="0" * 64)
    assert leftovers(tmp_path) == []


def test_wrong_size_keeps_nothing(served, tmp_path):
    with pytest.raises(ChecksumError, match="1,048,576 bytes, expected 1,000"):
        download_file(f"{served}/archive.bin", tmp_path / "archive.bin", size=1000)
    assert leftovers(tmp_path) == []


def test_failed_download_never_replaces_an_existing_file(served, tmp_path):
    destination = tmp_path / "archive.bin"
    destination.write_bytes(b"the user's own copy")
    with pytest.raises(ChecksumError):
        download_file(f"{served}/archive.bin", destination, sha256="0" * 64)
    assert destination.read_bytes() == b"the user's own copy"
    assert leftovers(tmp_path) == ["archive.bin"]


def test_verify_hook_can_reject_the_content(served, tmp_path):
    def reject(path: Path) -> None:
        assert path.read_bytes() == CONTENT  # it sees the complete temporary file
        raise ChecksumError("not the file we wanted")

    with pytest.raises(ChecksumError, match="not the file we wanted"):
        download_file(f"{served}/archive.bin", tmp_path / "archive.bin", verify=reject)
    assert leftovers(tmp_path) == []


def test_file_urls_work_too(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(CONTENT)
    destination = tmp_path / "cache" / "copy.bin"
    sha = hashlib.sha256(CONTENT).hexdigest()
    download_file(source.as_uri(), destination, sha256=sha)
    assert destination.read_bytes() == CONTENT


def test_unreachable_server_is_a_download_error_quickly(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=f"could not download http://127.0.0.1:{port}/x"):
        download_file(f"http://127.0.0.1:{port}/x", tmp_path / "x", timeout=2)
    assert leftovers(tmp_path) == []


def test_http_error_is_a_download_error(served, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download_file(f"{served}/missing.bin", tmp_path / "missing.bin")
    assert leftovers(tmp_path) == []
