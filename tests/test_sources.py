"""Source resolution order, checksum rules, and downloads from a local HTTP server."""

import dataclasses
import functools
import gzip
import hashlib
import http.server
import threading
import time
from pathlib import Path

import pytest

from fmnist_yolo import config
from fmnist_yolo.data import sources
from fmnist_yolo.errors import ChecksumError, FmnistError
from tests.conftest import NAMES, write_source


@pytest.fixture
def places(tmp_path, arrays, monkeypatch):
    """Four candidate source dirs, each with the files; Debian's is redirected into tmp_path."""
    dirs = {name: tmp_path / name for name in ("explicit", "env", "raw", "debian")}
    for d in dirs.values():
        write_source(d, arrays)
    monkeypatch.setattr(sources, "DEBIAN_DIR", dirs["debian"])
    monkeypatch.setenv(config.SOURCE_ENV, str(dirs["env"]))
    return dirs


def test_resolution_order(places, monkeypatch, tmp_path):
    raw = places["raw"]
    assert sources.resolve_source(places["explicit"], raw_dir=raw).origin == "source="
    assert sources.resolve_source(None, raw_dir=raw).dir == places["env"]
    monkeypatch.delenv(config.SOURCE_ENV)
    assert sources.resolve_source(None, raw_dir=raw).origin == "project raw dir"
    assert sources.resolve_source(None, raw_dir=tmp_path / "none").origin == "debian package"
    monkeypatch.setattr(sources, "DEBIAN_DIR", tmp_path / "no-debian")
    with pytest.raises(FmnistError, match="downloading is disabled"):
        sources.resolve_source(None, raw_dir=tmp_path / "none", download=False)


def test_explicit_source_does_not_fall_back(places, tmp_path):
    with pytest.raises(FmnistError, match="source directory not found"):
        sources.resolve_source(tmp_path / "missing")


def test_raw_files_preferred_name(tmp_path, arrays):
    write_source(tmp_path, arrays, gz=False)
    files = sources.locate_files(tmp_path)
    assert files["train_images"].name == "train-images-idx3-ubyte"


def test_verify_accepts_official_md5_or_payload(tmp_path, arrays, trusted, monkeypatch):
    src = tmp_path / "src"
    raw = (src / f"{NAMES['test_labels']}.gz").read_bytes()
    payload = gzip.decompress(raw)
    name, md5, sha = trusted["test_labels"]
    # The payload rule alone: a recompressed copy (like Debian's) has another MD5 and the official payload
    recompressed = gzip.compress(payload, compresslevel=1, mtime=12345)
    assert hashlib.md5(recompressed).hexdigest() != md5
    assert sources.verify("test_labels", src, recompressed, payload) == sha
    assert sources.verify("test_labels", src, payload, payload) == sha  # a raw IDX file: the payload hash alone
    # The MD5 rule alone: the table's payload hash is wrong, so only the .gz's official MD5 can accept it
    monkeypatch.setitem(sources.SOURCE_FILES, "test_labels", (name, md5, "0" * 64))
    assert sources.verify("test_labels", src, raw, payload) == sha  # accepted, and the payload's true hash returned
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        sources.verify("test_labels", src, recompressed, payload)  # neither rule holds
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        sources.verify("test_labels", src, payload, payload)  # an unpacked file has no .gz MD5 to match
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        sources.verify("train_labels", src, raw, payload)  # another file's bytes


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files; under /stall/ sends the headers and a few bytes, then nothing; under /drop/ closes mid-body."""

    def do_GET(self):
        mode, _, rest = self.path.lstrip("/").partition("/")
        if mode not in ("stall", "drop"):
            return super().do_GET()
        data = (Path(self.directory) / rest).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "stall":
            self.wfile.write(data[:10])
            self.wfile.flush()
            time.sleep(30)  # far longer than the test's timeout
        else:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(Handler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_download_good_files(server, source, trusted, tmp_path):
    www, url = server
    for p in source.iterdir():
        (www / p.name).write_bytes(p.read_bytes())
    raw = tmp_path / "raw"
    sources.download_official(raw, mirrors=(url,))
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{n}.gz" for n in NAMES.values())
    assert all((raw / p.name).read_bytes() == p.read_bytes() for p in source.iterdir())


@pytest.mark.parametrize("damage", ["truncated", "wrong", "missing"])
def test_download_refuses_bad_files(server, source, trusted, tmp_path, damage):
    www, url = server
    for p in source.iterdir():
        (www / p.name).write_bytes(p.read_bytes())
    victim = www / f"{NAMES['train_images']}.gz"
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:-100])
    elif damage == "wrong":
        victim.write_bytes(gzip.compress(b"\0" * 1000))
    else:
        victim.unlink()
    raw = tmp_path / "raw"
    with pytest.raises(FmnistError, match=f"{NAMES['train_images']}.gz: download failed"):
        sources.download_official(raw, mirrors=(url,))
    assert not (raw / victim.name).exists()
    assert not list(raw.glob(".download-*"))  # no partial leftovers to be mistaken for data later


@pytest.mark.parametrize("mode, message", [("stall", "stalled: no data for 1s"), ("drop", "interrupted: ")])
def test_download_stalled_or_dropped(mode, message, server, source, trusted, tmp_path):
    """A mirror that stalls is given up after the timeout, one that hangs up mid-file is not trusted; next mirror."""
    www, url = server
    for p in source.iterdir():
        (www / p.name).write_bytes(p.read_bytes())
    raw = tmp_path / "raw"
    # "stalled" can only come from the read timeout: the server stalls 30 s and then hangs up (that would be
    # "interrupted"); no wall-clock bound, which a busy machine could break
    with pytest.raises(FmnistError, match=f"download failed from every mirror .*{message}") as e:
        sources.download_official(raw, mirrors=(f"{url}{mode}/",), timeout=1)
    assert str(e.value).startswith(str(raw / f"{NAMES['train_images']}.gz"))
    assert not list(raw.iterdir())  # nothing published, no partial file left
    sources.download_official(raw, mirrors=(f"{url}{mode}/", url), timeout=1)  # falls through to the good one
    assert all((raw / p.name).read_bytes() == p.read_bytes() for p in source.iterdir())


def test_download_tries_next_mirror(server, source, trusted, tmp_path):
    www, url = server
    (www / "good").mkdir()
    for p in source.iterdir():
        (www / "good" / p.name).write_bytes(p.read_bytes())
    raw = tmp_path / "raw"
    sources.download_official(raw, mirrors=(url + "missing/", url + "good/"))
    assert len(list(raw.glob("*.gz"))) == 4


def test_prepare_downloads_as_last_resort(server, source, trusted, tmp_path, monkeypatch):
    from fmnist_yolo import prepare

    www, url = server
    for p in source.iterdir():
        (www / p.name).write_bytes(p.read_bytes())
    monkeypatch.delenv(config.SOURCE_ENV, raising=False)
    monkeypatch.setattr(sources, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(sources, "MIRRORS", (url,))
    monkeypatch.setattr(sources, "DEFAULTS", dataclasses.replace(config.DEFAULTS, raw_dir=tmp_path / "raw"))
    out = prepare(out=tmp_path / "fm", val_size=10, workers=1, progress=False)
    assert len(list(out.rglob("*.png"))) == 110 and len(list((tmp_path / "raw").glob("*.gz"))) == 4
