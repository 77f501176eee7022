"""`imgtool fetch` as a user runs it, against a real nginx on loopback: what it prints
when the published checksum does not match."""

import hashlib
import os
import subprocess

from conftest import IMGTOOL, Nginx


def test_mismatch_reported_once_per_download(tmp_path):
    """A wrong checksum is downloaded twice. The first mismatch is a warning that the file
    is fetched once more. The second is the error alone, not also a warning."""
    files = tmp_path / "www"
    files.mkdir()
    content = os.urandom(300_000)
    (files / "f.bin").write_bytes(content)
    wrong = "0" * 64
    nginx = Nginx(str(tmp_path), str(files))
    try:
        completed = subprocess.run(
            [IMGTOOL, "fetch", nginx.url("f.bin"), "--sha256", wrong, "--dir", str(tmp_path), "--progress", "none"],
            capture_output=True, text=True, timeout=60)
    finally:
        nginx.stop()
    lines = [line for line in completed.stderr.splitlines() if "checksum mismatch" in line]
    assert completed.returncode == 2
    assert len(lines) == 2, completed.stderr
    assert "warning" in lines[0]
    assert lines[0].endswith("; downloading it once more")
    assert lines[1].startswith("imgtool: checksum mismatch")
    assert hashlib.sha256(content).hexdigest() in lines[1]
    assert not (tmp_path / "f.bin").exists()
    assert not (tmp_path / "f.bin.part").exists()
