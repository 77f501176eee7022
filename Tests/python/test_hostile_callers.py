"""Hostile callers: paths that escape the pools root, a symlink swapped between check
and use, oversized requests, floods of notifications and a client that never reads."""

import gzip
import json
import os
import socket
import threading
import time

import pytest
import websocket

from conftest import call, result


def write_gzip(path, content):
    with gzip.open(path, "wb") as handle:
        handle.write(content)


def error_of(reply):
    assert "error" in reply, reply
    return reply["error"]


@pytest.mark.parametrize("source", [
    "../outside.gz", "/etc/passwd", "tank/../../outside.gz", "", "tank/\u0000x",
], ids=["dotdot", "absolute-outside", "nested-dotdot", "empty", "nul"])
def test_paths_outside_root_rejected(server, source):
    ws = server.connect()
    error = error_of(call(ws, "vm.decompress_gzip", source, "tank/disk.raw"))
    assert error["code"] == -32602
    assert error["data"]["extra"][0][0] == "src"


@pytest.mark.parametrize("source", ["tank/" + "a/" * 3000 + "x.gz", "tank/" + "a" * 300 + ".gz"],
                         ids=["path-too-long", "name-too-long"])
def test_overlong_path_rejected_with_limit(server, source):
    os.makedirs(os.path.join(server.pools_root, "tank"))
    ws = server.connect()
    reply = call(ws, "vm.decompress_gzip", source, "tank/disk.raw")
    error = error_of(reply)
    assert error["code"] == -32602
    assert "longer than the system allows" in error["data"]["reason"]
    assert "give a shorter path" in error["data"]["reason"]


def test_symlink_leading_outside_rejected(server):
    os.makedirs(os.path.join(server.pools_root, "tank"))
    outside = os.path.join(server.directory, "outside.gz")
    write_gzip(outside, b"secret")
    os.symlink(outside, os.path.join(server.pools_root, "tank", "link.gz"))
    ws = server.connect()
    error = error_of(call(ws, "vm.decompress_gzip", "tank/link.gz", "tank/disk.raw"))
    assert "outside the pools root" in error["data"]["reason"]
    assert not os.path.exists(os.path.join(server.pools_root, "tank", "disk.raw"))


def test_relative_symlink_escaping_rejected(server):
    os.makedirs(os.path.join(server.pools_root, "tank"))
    write_gzip(os.path.join(server.directory, "outside.gz"), b"secret")
    os.symlink("../../outside.gz", os.path.join(server.pools_root, "tank", "link.gz"))
    ws = server.connect()
    error = error_of(call(ws, "vm.decompress_gzip", "tank/link.gz", "tank/disk.raw"))
    assert error["code"] == -32602


def test_directory_and_fifo_rejected(server):
    tank = os.path.join(server.pools_root, "tank")
    os.makedirs(os.path.join(tank, "dir"))
    os.mkfifo(os.path.join(tank, "fifo"))
    ws = server.connect()
    for name in ("dir", "fifo"):
        error = error_of(call(ws, "vm.raw_resize", f"tank/{name}", "1"))
        assert error["code"] == -32602, name


def test_existing_destination_rejected(server):
    tank = os.path.join(server.pools_root, "tank")
    os.makedirs(tank)
    write_gzip(os.path.join(tank, "image.gz"), b"data")
    with open(os.path.join(tank, "disk.raw"), "wb") as handle:
        handle.write(b"guest data")
    ws = server.connect()
    error = error_of(call(ws, "vm.decompress_gzip", "tank/image.gz", "tank/disk.raw"))
    assert error["data"]["errname"] == "EEXIST"
    with open(os.path.join(tank, "disk.raw"), "rb") as handle:
        assert handle.read() == b"guest data"


def test_symlink_swapped_between_check_and_use(server):
    """A thread flips a symlink between a file inside the root and one outside while
    inflation calls run; every output must hold the inside file's bytes."""
    tank = os.path.join(server.pools_root, "tank")
    os.makedirs(tank)
    inside = os.path.join(tank, "inside.gz")
    outside = os.path.join(server.directory, "outside.gz")
    write_gzip(inside, b"inside " * 1000)
    write_gzip(outside, b"OUTSIDE" * 1000)
    link = os.path.join(tank, "swap.gz")
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            for target in (inside, outside):
                temporary = link + ".new"
                os.symlink(target, temporary)
                os.replace(temporary, link)

    os.symlink(inside, link)
    flipper = threading.Thread(target=flip)
    flipper.start()
    ws = server.connect()
    outputs = []
    try:
        for attempt in range(40):
            reply = call(ws, "vm.decompress_gzip", "tank/swap.gz", f"tank/out{attempt}.raw", id=attempt)
            if "result" in reply:
                outputs.append(os.path.join(tank, f"out{attempt}.raw"))
                job = reply["result"]
                while result(ws, "core.get_jobs", [["id", "=", job]], {"get": True})["state"] in ("WAITING", "RUNNING"):
                    time.sleep(0.01)
            else:
                assert reply["error"]["code"] == -32602
    finally:
        stop.set()
        flipper.join()
    for path in outputs:
        if os.path.exists(path):
            with open(path, "rb") as handle:
                assert b"OUTSIDE" not in handle.read()


def test_oversized_http_head_rejected(server):
    sock = server.unix_socket()
    sock.sendall(b"GET /api/current HTTP/1.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 431")


def test_slow_http_head_is_dropped(server):
    # One byte every 2 s never trips a per-receive timeout; the head as a whole has 10 s.
    sock = server.unix_socket()
    sock.sendall(b"GET /api/current HTTP/1.1\r\n")
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < 20:
        try:
            sock.sendall(b"X")
        except OSError:
            closed = True
            break
        sock.settimeout(2)
        try:
            if sock.recv(100) == b"":
                closed = True
                break
        except socket.timeout:
            pass
        except OSError:
            closed = True
            break
    assert closed
    assert time.monotonic() - started < 14


def test_unknown_endpoint_gets_404(server):
    sock = server.unix_socket()
    sock.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 404")


def test_ten_thousand_notifications(server):
    ws = server.connect()
    notification = json.dumps({"jsonrpc": "2.0", "method": "core.ping", "params": []})
    for _ in range(10000):
        ws.send(notification)
    reply = call(ws, "core.ping", id="after")
    assert reply["result"] == "pong"
    ws.settimeout(0.5)
    with pytest.raises(Exception):
        ws.recv()


def test_client_that_never_reads_is_disconnected(make_server):
    server = make_server("--send-queue-bytes", "65536")
    # A subscriber with a small receive buffer that never reads again.
    silent = websocket.WebSocket()
    silent_socket = server.unix_socket()
    silent_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    silent.connect("ws://localhost/api/current", socket=silent_socket)
    silent.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "core.subscribe", "params": ["core.get_jobs"]}))

    worker = server.connect()
    started = time.monotonic()
    disconnected = False
    while time.monotonic() - started < 60:
        for _ in range(50):
            result(worker, "test.sleep", 0)
        ping_started = time.monotonic()
        assert result(worker, "core.ping") == "pong"
        assert time.monotonic() - ping_started < 2
        if "disconnecting the slow client" in server.log_text():
            disconnected = True
            break
    assert disconnected


def test_connections_over_limit_get_503(make_server):
    server = make_server("--max-connections", "2")
    first = server.connect()
    second = server.connect()
    assert result(first, "core.ping") == "pong"
    # The server writes 503 as soon as it accepts, before the client sends anything.
    extra = server.unix_socket()
    assert extra.recv(100).startswith(b"HTTP/1.1 503")
    second.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            third = server.connect()
            break
        except Exception:
            time.sleep(0.05)
    assert result(third, "core.ping") == "pong"


def test_idle_tcp_clients_cannot_lock_out_root(make_server):
    # Clients that finish the handshake and never log in hold their connections for as
    # long as they like. They must not use up the slots of root on the Unix socket, the
    # trusted middleware.
    server = make_server("--max-connections", "2")
    idle = [server.connect(tcp=True) for _ in range(2)]
    with pytest.raises(websocket.WebSocketBadStatusException) as rejected:
        server.connect(tcp=True)
    assert rejected.value.status_code == 503
    root = server.connect()
    assert result(root, "core.ping") == "pong"
    for connection in idle:
        connection.close()


def test_calls_over_limit_get_ebusy(make_server):
    server = make_server("--max-calls", "1")
    ws = server.connect()
    result(ws, "core.set_options", {"legacy_jobs": False})
    # The first call's reply waits for its 2-second job, so it stays in flight.
    ws.send(json.dumps({"jsonrpc": "2.0", "id": "slow", "method": "test.sleep", "params": [2]}))
    time.sleep(0.2)
    reply = call(ws, "core.ping", id="fast")
    assert reply["error"]["data"]["errname"] == "EBUSY"
    # The server logs the rejection, as it does for every other rejected call.
    deadline = time.monotonic() + 2
    while "call core.ping rejected with EBUSY" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "call core.ping rejected with EBUSY: calls in flight at the limit (1, --max-calls)" in server.log_text()


def test_ddp_calls_over_limit_get_ebusy(make_server):
    # A DDP `method` always expects a `result`, so one over the limit must fail at once
    # with EBUSY. Treated as a notification, it blocked the reader for 30 s and was then
    # dropped without any result.
    server = make_server("--max-calls", "2")
    ws = server.connect("/websocket")
    ws.send(json.dumps({"msg": "connect", "version": "1", "support": ["1"]}))
    assert json.loads(ws.recv())["msg"] == "connected"
    for index in range(2):
        ws.send(json.dumps({"msg": "method", "id": f"hold{index}", "method": "test.hold", "params": [3]}))
    time.sleep(0.2)
    sent = time.monotonic()
    for index in range(20):
        ws.send(json.dumps({"msg": "method", "id": f"over{index}", "method": "core.ping", "params": []}))
    ws.send(json.dumps({"msg": "ping", "id": "after"}))

    replies = {}
    ws.settimeout(10)
    while len(replies) < 23:
        message = json.loads(ws.recv())
        replies[message["id"]] = (message, time.monotonic() - sent)
    for index in range(20):
        message, _ = replies[f"over{index}"]
        assert message["msg"] == "result"
        assert message["error"]["errname"] == "EBUSY"
    # The test.hold calls end 3 s after they started, and every other reply came before
    # them without waiting.
    assert replies["after"][0] == {"msg": "pong", "id": "after"}
    assert replies["after"][1] < 1.5
    assert replies["hold0"][0]["result"] == "held"
    assert replies["hold1"][0]["result"] == "held"
    assert "dropped" not in server.log_text()


def test_subscriptions_per_connection_bounded(server):
    # Each subscription costs memory and work on every job event; a connection gets 64.
    ws = server.connect()
    for _ in range(64):
        result(ws, "core.subscribe", "core.get_jobs")
    reply = call(ws, "core.subscribe", "core.get_jobs")
    assert reply["error"]["data"]["errname"] == "EBUSY"
