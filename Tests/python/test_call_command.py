"""`imgtool call`, the midclt-like client, against a running server."""

import json
import os
import signal
import subprocess
import time

from conftest import IMGTOOL


def imgtool_call(server, *arguments, socket=True):
    prefix = ["--socket", server.socket_path] if socket else []
    return subprocess.run([IMGTOOL, "call", *prefix, *arguments], capture_output=True, text=True, timeout=60)


def test_plain_string_result_printed_as_is(server):
    completed = imgtool_call(server, "core.ping")
    assert completed.returncode == 0
    assert completed.stdout == "pong\n"


def test_string_result_raw_on_pipe(server):
    # Scripts read the result from a pipe, so it stays as the server sent it.
    completed = imgtool_call(server, "-j", "test.sleep", "0.01", '{"result": "a\\u001b[31mb\\\\c"}')
    assert completed.returncode == 0
    assert completed.stdout == "a\x1b[31mb\\c\n"


def imgtool_call_on_terminal(server, *arguments):
    """Runs `imgtool call` with standard output on a pseudo-terminal; returns the
    completed process and the bytes the terminal received."""
    primary, secondary = os.openpty()
    try:
        process = subprocess.run(
            [IMGTOOL, "call", "--socket", server.socket_path, *arguments],
            stdout=secondary, stderr=subprocess.PIPE, timeout=60)
        os.close(secondary)
        secondary = None
        output = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        if secondary is not None:
            os.close(secondary)
        os.close(primary)
    return process, output


def test_string_result_escaped_on_terminal(server):
    # On a terminal, an escape sequence in the result must not reach it.
    process, output = imgtool_call_on_terminal(server, "-j", "test.sleep", "0.01", '{"result": "a\\u001b[31mb\\\\c"}')
    assert process.returncode == 0
    assert output == b"a\\u{1B}[31mb\\\\c\r\n"


def test_json_result_escaped_on_terminal(server):
    # JSON escapes C0 controls but not U+009B (CSI, which terminals also obey) or
    # U+202E. The terminal gets those as JSON escapes, and the text still parses.
    sent = "x\u009b31m\u202eevil\u2028y"
    started = imgtool_call(server, "-j", "test.sleep", "0.01", json.dumps({"result": sent}))
    assert started.returncode == 0

    process, output = imgtool_call_on_terminal(server, "core.get_jobs", "[]", '{"select": ["result"]}')

    assert process.returncode == 0
    assert output == b'[{"result":"x\\u009b31m\\u202eevil\\u2028y"}]\r\n'
    assert json.loads(output) == [{"result": sent}]


def test_json_result_raw_on_pipe(server):
    sent = "x\u009b31m\u202eevil"
    started = imgtool_call(server, "-j", "test.sleep", "0.01", json.dumps({"result": sent}))
    assert started.returncode == 0

    completed = imgtool_call(server, "core.get_jobs", "[]", '{"select": ["result"]}')

    assert completed.returncode == 0
    assert completed.stdout == '[{"result":"x\u009b31m\u202eevil"}]\n'


def test_json_result_printed_as_json(server):
    completed = imgtool_call(server, "core.get_jobs", "[]", '{"count": true}')
    assert completed.stdout == "0\n"
    completed = imgtool_call(server, "core.get_jobs")
    assert json.loads(completed.stdout) == []


def test_follow_job_prints_result(server):
    completed = imgtool_call(server, "-j", "test.sleep", "0.1")
    assert completed.returncode == 0
    assert completed.stdout == "slept\n"


def test_follow_failed_job_exits_nonzero(server):
    completed = imgtool_call(server, "-j", "test.sleep", "0.01", '{"fail": true}')
    assert completed.returncode == 1
    assert "FAILED" in completed.stderr


def test_call_error_names_method_and_reason(server):
    completed = imgtool_call(server, "vm.raw_resize", "/etc/passwd", "1")
    assert completed.returncode == 1
    assert "vm.raw_resize failed" in completed.stderr
    assert "outside the pools root" in completed.stderr


def test_call_validation_error_names_errno_once(server):
    # A validation reason already starts with "[EINVAL]", as the middleware's do.
    completed = imgtool_call(server, "vm.raw_resize", "/etc/passwd", "1")
    assert completed.stderr.count("[EINVAL]") == 1


def test_negative_number_is_an_argument(server):
    # "-1" is valid JSON, so it is sent as an ARG rather than taken for an option.
    tank = os.path.join(server.pools_root, "tank")
    os.makedirs(tank, exist_ok=True)
    with open(os.path.join(tank, "disk.raw"), "wb") as handle:
        handle.truncate(1 << 20)
    completed = imgtool_call(server, "vm.raw_resize", "tank/disk.raw", "-1")
    assert "unknown option" not in completed.stderr
    assert completed.returncode == 1
    assert "a size cannot be negative" in completed.stderr


def test_tcp_with_api_key(server):
    key = server.create_api_key()
    url = f"ws://127.0.0.1:{server.port}/api/current"
    completed = imgtool_call(server, "--url", url, "--api-key", key, "core.get_jobs", socket=False)
    assert completed.returncode == 0, completed.stderr
    rejected = imgtool_call(server, "--url", url, "core.get_jobs", socket=False)
    assert "ENOTAUTHENTICATED" in rejected.stderr


def test_sigint_detaches_from_job(server):
    follower = subprocess.Popen([IMGTOOL, "call", "--socket", server.socket_path, "-j", "test.sleep", "4"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until the job exists, so that the client is following it.
    deadline = time.monotonic() + 10
    while json.loads(imgtool_call(server, "core.get_jobs", "[]", '{"count": true}').stdout) == 0:
        assert time.monotonic() < deadline, "the job never appeared"
        time.sleep(0.05)
    interrupted = time.monotonic()
    follower.send_signal(signal.SIGINT)
    _, error = follower.communicate(timeout=10)
    assert follower.returncode == 130
    assert time.monotonic() - interrupted < 2, "the client kept following after SIGINT"
    job_id = json.loads(imgtool_call(server, "core.get_jobs").stdout)[0]["id"]
    assert f"stopped following job {job_id}" in error
    assert f"imgtool call core.job_abort {job_id}" in error
    # The job itself goes on to its end.
    while True:
        state = json.loads(imgtool_call(server, "core.get_jobs").stdout)[0]["state"]
        if state != "RUNNING" and state != "WAITING":
            break
        assert time.monotonic() - interrupted < 15, "the job did not end"
        time.sleep(0.1)
    assert state == "SUCCESS"


def test_serve_log_brackets_ipv6_listener(tmp_path):
    """The start line names an IPv6 listener as [::1]:PORT, as a ws:// URL needs it, not
    ::1:PORT, where the port cannot be separated from the address."""
    os.makedirs(tmp_path / "pools")
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [IMGTOOL, "serve", "--socket", str(tmp_path / "imgtool.sock"), "--pools-root", str(tmp_path / "pools"),
             "--api-keys", str(tmp_path / "api-keys.json"), "--state-dir", str(tmp_path / "state"),
             "--listen", "[::1]:0"],
            stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while "serving on" not in log_path.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    text = log_path.read_text()
    assert "serving on" in text, text
    assert "tcp:[::1]:" in text, text


def test_duplicate_key_argument_rejected(server):
    # The text is JSON, so sending it as a string would hide the mistake, and the server
    # would then report the object's text as a path.
    completed = imgtool_call(server, "vm.raw_resize", '{"a": 1, "a": 2}', "20")
    assert completed.returncode == 64, completed.stderr
    assert "appears twice in one object" in completed.stderr
    assert "does not exist" not in completed.stderr


def test_follow_job_error_escaped(server):
    # The job's error quotes the path the caller sent.
    tank = os.path.join(server.pools_root, "tank")
    os.makedirs(tank, exist_ok=True)
    name = "bad\x1b[31m\u202e.gz"
    with open(os.path.join(tank, name), "wb") as handle:
        handle.write(b"hello\n")
    completed = imgtool_call(server, "-j", "vm.decompress_gzip", "tank/" + name, "tank/out.raw")
    assert completed.returncode == 1, completed.stderr
    assert "FAILED" in completed.stderr
    assert "bad\\u{1B}[31m\\u{202E}.gz" in completed.stderr
    assert "\x1b" not in completed.stderr
    assert "\u202e" not in completed.stderr


def test_call_error_escapes_key_once(server):
    # The server's reason already quotes an unknown key with its newline written \u{A}
    # and its backslash doubled. Escaping that reason again would show a key that
    # contains a backslash followed by "u{A}".
    os.makedirs(os.path.join(server.pools_root, "tank"), exist_ok=True)
    assert imgtool_call(server, "vm.activate_sharefs", "tank").returncode == 0
    request = {"vm_id": 9, "vm_name": "x", "raw_path": "tank/x.raw", "password": "pw", "a\\b": 1, "vm_name\n": 2}
    completed = imgtool_call(server, "vm.write_container_conf", json.dumps(request))
    assert completed.returncode == 1, completed.stderr
    assert "unknown key 'a\\\\b'" in completed.stderr
    assert "'vm_name\\u{A}'" in completed.stderr
    assert "\\\\\\\\" not in completed.stderr
    assert "\\\\u{A}" not in completed.stderr
