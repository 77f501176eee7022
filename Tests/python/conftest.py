"""Fixtures for the service tests: each test starts its own `imgtool serve` on a
temporary Unix socket, a free loopback TCP port and a temporary pools root, and stops
it by its pid."""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest
import websocket

IMGTOOL = os.environ.get("IMGTOOL") or os.path.join(
    os.path.dirname(__file__), "..", "..", ".build", "debug", "imgtool")


class Server:
    """A running `imgtool serve` and the paths it uses."""

    def __init__(self, directory, extra_arguments=()):
        self.directory = directory
        # Non-root clients must reach the socket; mkdtemp creates the directory 0700.
        os.chmod(directory, 0o755)
        self.socket_path = os.path.join(directory, "imgtool.sock")
        self.pools_root = os.path.join(directory, "pools")
        self.keys_path = os.path.join(directory, "api-keys.json")
        self.state_directory = os.path.join(directory, "state")
        os.makedirs(self.pools_root)
        self.log_path = os.path.join(directory, "serve.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [IMGTOOL, "serve", "--socket", self.socket_path, "--pools-root", self.pools_root,
             "--api-keys", self.keys_path, "--state-dir", self.state_directory, "--listen", "127.0.0.1:0", "--enable-test-methods",
             *extra_arguments],
            stdout=subprocess.DEVNULL, stderr=self.log)
        self.port = self._wait_for_port()

    def _wait_for_port(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("imgtool serve exited: " + self.log_text())
            match = re.search(r"tcp:127\.0\.0\.1:(\d+)", self.log_text())
            if match and os.path.exists(self.socket_path):
                return int(match.group(1))
            time.sleep(0.05)
        raise RuntimeError("imgtool serve did not start: " + self.log_text())

    def log_text(self):
        with open(self.log_path) as handle:
            return handle.read()

    def stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()

    def unix_socket(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.socket_path)
        return sock

    def connect(self, path="/api/current", tcp=False, timeout=10):
        """A websocket-client connection over the Unix socket (default) or TCP."""
        ws = websocket.WebSocket(skip_utf8_validation=True)
        ws.settimeout(timeout)
        if tcp:
            ws.connect(f"ws://127.0.0.1:{self.port}{path}")
        else:
            ws.connect("ws://localhost" + path, socket=self.unix_socket())
        return ws

    def memory_kib(self):
        with open(f"/proc/{self.process.pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def create_api_key(self, name="test"):
        result = subprocess.run([IMGTOOL, "apikey", "create", name, "--api-keys", self.keys_path],
                                capture_output=True, text=True, check=True)
        return result.stdout.strip()


@pytest.fixture
def server():
    with tempfile.TemporaryDirectory(prefix="imgtool-serve-") as directory:
        running = Server(directory)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture
def make_server():
    """Starts servers with extra `imgtool serve` arguments; stops them all afterwards."""
    started = []
    directories = []

    def start(*extra_arguments):
        directory = tempfile.TemporaryDirectory(prefix="imgtool-serve-")
        directories.append(directory)
        running = Server(directory.name, extra_arguments)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
    for directory in directories:
        directory.cleanup()


def call(ws, method, *params, id=1):
    """Sends one JSON-RPC request and returns the reply. Other messages that arrive first
    (a job's `added` event can precede the reply that names the job) are kept in
    `ws.pending` for `next_message`."""
    ws.send(json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": list(params)}))
    while True:
        reply = json.loads(ws.recv())
        if reply.get("id") == id and "method" not in reply:
            return reply
        if not hasattr(ws, "pending"):
            ws.pending = []
        ws.pending.append(reply)


def next_message(ws):
    """The next message: one that `call` set aside, else the next one received."""
    pending = getattr(ws, "pending", None)
    if pending:
        return pending.pop(0)
    return json.loads(ws.recv())


def result(ws, method, *params):
    reply = call(ws, method, *params)
    assert "error" not in reply, reply
    return reply["result"]


def raw_frame(opcode, payload=b"", fin=True, mask=True, length_form=None, rsv=0):
    """Builds one client frame by hand. `length_form` forces 16 or 64 to use the
    longer length encodings for short payloads."""
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if mask else 0
    length = len(payload)
    if length_form == 64 or (length_form is None and length > 0xFFFF):
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    elif length_form == 16 or (length_form is None and length >= 126):
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BB", first, mask_bit | length)
    if not mask:
        return header + payload
    key = b"\x11\x22\x33\x44"
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_frame(ws):
    """Reads one server frame with websocket-client's low-level API: (opcode, payload)."""
    frame = ws.recv_frame()
    return frame.opcode, frame.data


def close_code(ws):
    """Reads frames until a close frame; returns its status code (None when empty)."""
    while True:
        opcode, data = read_frame(ws)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None


class Nginx:
    """A real nginx serving `root` on 127.0.0.1 at a free port, stopped by its pid."""

    def __init__(self, directory, root, rate=None):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.pid_path = os.path.join(directory, "nginx.pid")
        config = os.path.join(directory, "nginx.conf")
        with open(config, "w") as handle:
            handle.write(f"""
worker_processes 1;
# The files live in private temporary directories that only root may read.
user root;
pid {self.pid_path};
error_log {directory}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
        {f"limit_rate {rate};" if rate else ""}
    }}
}}
""")
        self.process = subprocess.Popen(["nginx", "-p", directory, "-c", config, "-g", "daemon off;"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def url(self, name):
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
