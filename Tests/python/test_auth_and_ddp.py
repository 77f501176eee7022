"""Authentication rules and the DDP-like protocol at /websocket."""

import json
import os
import subprocess
import sys
import time

import websocket

from conftest import IMGTOOL, call, result


def test_root_on_unix_socket_is_trusted(server):
    ws = server.connect()
    assert isinstance(result(ws, "core.get_jobs"), list)


def test_tcp_peer_not_authenticated(server):
    ws = server.connect(tcp=True)
    reply = call(ws, "core.get_jobs")
    assert reply["error"]["code"] == -32001
    assert reply["error"]["data"]["error"] == 207
    assert reply["error"]["data"]["errname"] == "ENOTAUTHENTICATED"


def test_ping_and_set_options_before_login(server):
    ws = server.connect(tcp=True)
    assert result(ws, "core.ping") == "pong"
    assert result(ws, "core.set_options", {"legacy_jobs": True}) is None


def test_login_with_api_key(server):
    key = server.create_api_key()
    ws = server.connect(tcp=True)
    assert result(ws, "auth.login_with_api_key", key) is True
    assert isinstance(result(ws, "core.get_jobs"), list)


def test_login_with_wrong_key_fails(server):
    key = server.create_api_key()
    ws = server.connect(tcp=True)
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert result(ws, "auth.login_with_api_key", wrong) is False
    assert call(ws, "core.get_jobs")["error"]["data"]["errname"] == "ENOTAUTHENTICATED"


def test_login_ex_api_key_plain(server):
    key = server.create_api_key()
    ws = server.connect(tcp=True)
    reply = result(ws, "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "root", "api_key": key})
    assert reply["response_type"] == "SUCCESS"
    assert isinstance(result(ws, "core.get_jobs"), list)


def test_logout_ends_login_and_subscriptions(server):
    key = server.create_api_key()
    ws = server.connect(tcp=True)
    assert result(ws, "auth.login_with_api_key", key) is True
    result(ws, "core.subscribe", "core.get_jobs")
    assert result(ws, "auth.logout") is None
    assert call(ws, "core.get_jobs")["error"]["data"]["errname"] == "ENOTAUTHENTICATED"
    # A job that root starts now sends no event to the client that logged out: its
    # subscription ended with its login.
    root = server.connect()
    job_id = result(root, "test.sleep", 0)
    while result(root, "core.get_jobs", [["id", "=", job_id]], {"get": True})["state"] != "SUCCESS":
        time.sleep(0.02)
    reply = call(ws, "core.ping", id="after")
    assert reply["result"] == "pong"
    assert getattr(ws, "pending", []) == []


def test_login_ex_rejects_unknown_mechanism(server):
    ws = server.connect(tcp=True)
    reply = call(ws, "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "root", "password": "x"})
    assert reply["error"]["code"] == -32602


def test_login_ex_accepts_login_options(server):
    # login_options changes nothing here: the reply carries only response_type.
    key = server.create_api_key()
    ws = server.connect(tcp=True)
    reply = result(ws, "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "root", "api_key": key,
                                         "login_options": {"user_info": True}})
    assert reply == {"response_type": "SUCCESS"}


def test_login_ex_rejects_unknown_key_without_echoing_key(server):
    key = server.create_api_key()
    ws = server.connect(tcp=True)
    reply = call(ws, "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "root", "api_key": key,
                                       "otp_token": "123456"})
    assert reply["error"]["code"] == -32602
    attribute, message, errno = reply["error"]["data"]["extra"][0]
    assert attribute == "login_data.otp_token"
    assert message == "unknown key 'otp_token'; auth.login_ex accepts mechanism, username, api_key and login_options"
    assert errno == 22
    assert key not in json.dumps(reply)
    # The rejected call did not authenticate the connection.
    assert call(ws, "core.get_jobs")["error"]["data"]["errname"] == "ENOTAUTHENTICATED"


def test_login_ex_misspelt_key_hides_the_value(server):
    key = server.create_api_key()
    ws = server.connect(tcp=True)
    reply = call(ws, "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "root", "API_KEY": key})
    assert reply["error"]["data"]["extra"][0][0] == "login_data.API_KEY"
    assert "did you mean 'api_key'?" in reply["error"]["data"]["reason"]
    assert key not in json.dumps(reply)
    assert key.split("-", 1)[1] not in server.log_text()


def test_key_stored_hashed_and_never_logged(server):
    key = server.create_api_key()
    ws = server.connect(tcp=True)
    result(ws, "auth.login_with_api_key", key)
    with open(server.keys_path) as handle:
        store = handle.read()
    secret = key.split("-", 1)[1]
    assert secret not in store
    assert secret not in server.log_text()
    assert oct(os.stat(server.keys_path).st_mode & 0o777) == "0o600"


def test_revoked_key_rejected_by_running_server(server):
    key = server.create_api_key()
    first = server.connect(tcp=True)
    assert result(first, "auth.login_with_api_key", key) is True
    subprocess.run([IMGTOOL, "apikey", "revoke", key.split("-", 1)[0], "--api-keys", server.keys_path], check=True)
    second = server.connect(tcp=True)
    assert result(second, "auth.login_with_api_key", key) is False


NON_ROOT_CLIENT = r"""
import json, os, socket, sys, websocket
os.setgid(65534); os.setuid(65534)
sock = socket.socket(socket.AF_UNIX); sock.connect(sys.argv[1])
ws = websocket.WebSocket(); ws.connect("ws://localhost/api/current", socket=sock)
ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "core.get_jobs", "params": []}))
print(ws.recv())
"""


def test_non_root_unix_peer_must_log_in(server):
    output = subprocess.run([sys.executable, "-c", NON_ROOT_CLIENT, server.socket_path],
                            capture_output=True, text=True, check=True).stdout
    assert json.loads(output)["error"]["data"]["errname"] == "ENOTAUTHENTICATED"


def ddp(ws, message):
    ws.send(json.dumps(message))
    return json.loads(ws.recv())


def test_ddp_connect_and_method(server):
    ws = server.connect("/websocket")
    connected = ddp(ws, {"msg": "connect", "version": "1", "support": ["1"]})
    assert connected["msg"] == "connected"
    reply = ddp(ws, {"msg": "method", "id": "a1", "method": "core.ping", "params": []})
    assert reply == {"msg": "result", "id": "a1", "result": "pong"}


def test_ddp_method_before_connect_fails(server):
    ws = server.connect("/websocket")
    assert ddp(ws, {"msg": "method", "id": "a1", "method": "core.ping", "params": []})["msg"] == "failed"


def test_ddp_error_shape(server):
    ws = server.connect("/websocket", tcp=True)
    ddp(ws, {"msg": "connect", "version": "1", "support": ["1"]})
    reply = ddp(ws, {"msg": "method", "id": "b", "method": "core.get_jobs", "params": []})
    assert reply["error"]["error"] == 207
    assert reply["error"]["errname"] == "ENOTAUTHENTICATED"


def test_ddp_sub_id_must_be_string(server):
    # A DDP subscription id is a string. With a number in its place, the client's
    # `unsub` could not name the subscription, so `sub` must reject it.
    ws = server.connect("/websocket")
    ddp(ws, {"msg": "connect", "version": "1", "support": ["1"]})
    reply = ddp(ws, {"msg": "sub", "id": 5, "name": "core.get_jobs"})
    assert reply["msg"] == "nosub"
    assert reply["id"] == 5
    assert reply["error"]["errname"] == "EINVAL"
    assert "got a number" in reply["error"]["reason"]
    reply = ddp(ws, {"msg": "unsub", "id": 5})
    assert reply["msg"] == "nosub"
    assert reply["error"]["errname"] == "EINVAL"


def test_ddp_sub_ready_added_changed(server):
    ws = server.connect("/websocket")
    ddp(ws, {"msg": "connect", "version": "1", "support": ["1"]})
    ready = ddp(ws, {"msg": "sub", "id": "s1", "name": "core.get_jobs"})
    assert ready == {"msg": "ready", "subs": ["s1"]}
    ws.send(json.dumps({"msg": "method", "id": "m", "method": "test.sleep", "params": [0.05]}))
    messages = []
    while True:
        message = json.loads(ws.recv())
        messages.append(message)
        if message.get("msg") == "changed" and message["fields"]["state"] == "SUCCESS":
            break
    kinds = [m["msg"] for m in messages if m["msg"] in ("added", "changed")]
    assert kinds[0] == "added"
    assert messages[-1]["collection"] == "core.get_jobs"
    assert {"msg": "result", "id": "m", "result": 1} in messages


def test_ddp_sub_repeated_id_then_unsub(server):
    ws = server.connect("/websocket")
    ddp(ws, {"msg": "connect", "version": "1", "support": ["1"]})
    ddp(ws, {"msg": "sub", "id": "s1", "name": "core.get_jobs"})
    ddp(ws, {"msg": "sub", "id": "s1", "name": "core.get_jobs"})
    assert ddp(ws, {"msg": "unsub", "id": "s1"}) == {"msg": "nosub", "id": "s1"}
    ws.send(json.dumps({"msg": "method", "id": "m", "method": "test.sleep", "params": [0]}))
    # The job ends at once; collect what arrives within a second after it starts.
    ws.settimeout(1)
    kinds = []
    try:
        while True:
            kinds.append(json.loads(ws.recv())["msg"])
    except websocket.WebSocketTimeoutException:
        pass
    assert kinds == ["result"]


def test_ddp_ping_pong(server):
    ws = server.connect("/websocket")
    ddp(ws, {"msg": "connect", "version": "1", "support": ["1"]})
    assert ddp(ws, {"msg": "ping", "id": "p"}) == {"msg": "pong", "id": "p"}


def test_ddp_unknown_message_type(server):
    # A short type comes back quoted, with the accepted ones. A long one is named by its
    # length only, so a frame's content does not echo without bound.
    ws = server.connect("/websocket")
    ddp(ws, {"msg": "connect", "version": "1", "support": ["1"]})
    reply = ddp(ws, {"msg": "methd", "id": "x"})
    assert reply == {"msg": "error",
                     "reason": "unknown message type 'methd'; use connect, ping, pong, method, sub or unsub"}
    reply = ddp(ws, {"msg": "s" * 100000})
    assert reply["msg"] == "error"
    assert reply["reason"].startswith("unknown message type of 100000 characters;")
    assert ddp(ws, {"msg": "ping", "id": "p"}) == {"msg": "pong", "id": "p"}


def test_apikey_name_escaped(tmp_path):
    # A tab or newline in a name would forge a column or a row of the list, and an escape
    # sequence would reach the terminal.
    keys_path = str(tmp_path / "api-keys.json")
    name = "ops\tfake\n9\tforged\x1b[2J\u202e"
    created = subprocess.run([IMGTOOL, "apikey", "create", name, "--api-keys", keys_path],
                             capture_output=True, text=True, check=True)
    assert "'ops\\u{9}fake\\u{A}9\\u{9}forged\\u{1B}[2J\\u{202E}'" in created.stderr
    listed = subprocess.run([IMGTOOL, "apikey", "list", "--api-keys", keys_path],
                            capture_output=True, text=True, check=True)
    rows = listed.stdout.splitlines()
    assert len(rows) == 1
    assert rows[0].split("\t")[:2] == ["1", "ops\\u{9}fake\\u{A}9\\u{9}forged\\u{1B}[2J\\u{202E}"]
