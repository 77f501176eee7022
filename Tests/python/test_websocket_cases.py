"""WebSocket framing and JSON-RPC envelope cases, sent as raw frames over the Unix
socket and TCP with websocket-client's low-level API, and close codes sent by the
websockets library."""

import json

import pytest
import websocket
import websockets.sync.client

from conftest import call, close_code, raw_frame, read_frame

OPCODE_TEXT = 0x1
OPCODE_CONTINUATION = 0x0
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9


@pytest.fixture(params=["unix", "tcp"])
def ws(request, server):
    connection = server.connect(tcp=request.param == "tcp")
    yield connection
    connection.shutdown()


def test_empty_batch_gets_one_error_object(ws):
    ws.send("[]")
    reply = json.loads(ws.recv())
    assert isinstance(reply, dict)
    assert reply["error"]["code"] == -32600
    assert reply["id"] is None


def test_batch_of_one_gets_array_of_one_error(ws):
    ws.send("[1]")
    reply = json.loads(ws.recv())
    assert isinstance(reply, list)
    assert len(reply) == 1
    assert reply[0]["error"]["code"] == -32600


def test_request_without_id_gets_no_reply(ws):
    ws.send(json.dumps({"jsonrpc": "2.0", "method": "no.such_method", "params": []}))
    ws.send(json.dumps({"jsonrpc": "2.0", "method": "core.ping", "params": []}))
    ws.send(json.dumps({"jsonrpc": "2.0", "method": "core.ping", "params": {"by": "name"}}))
    # The first reply belongs to the ping with an id, so no reply came for the notifications.
    reply = call(ws, "core.ping", id=7)
    assert reply == {"jsonrpc": "2.0", "id": 7, "result": "pong"}


@pytest.mark.parametrize("request_id", [0, "", None, 2**53, "abc", 1.5])
def test_id_returned_with_exact_type(ws, request_id):
    ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "core.ping", "params": []}))
    text = ws.recv()
    reply = json.loads(text)
    assert reply["id"] == request_id
    assert type(reply["id"]) is type(request_id)


def test_malformed_json_gets_parse_error_and_connection_stays(ws):
    ws.send("{not json")
    reply = json.loads(ws.recv())
    assert reply["error"]["code"] == -32700
    assert reply["id"] is None
    assert call(ws, "core.ping")["result"] == "pong"


def test_parse_error_carries_reason_and_is_logged(server):
    """The parser's reason (here a lone surrogate escape, which a client cannot see in
    its text) reaches the client in `data` and the admin in the log."""
    ws = server.connect()
    ws.send('{"jsonrpc": "2.0", "id": "\\ud800", "method": "core.ping", "params": []}')
    reply = json.loads(ws.recv())
    assert reply["error"]["code"] == -32700
    data = reply["error"]["data"]
    assert data["error"] == 22
    assert data["errname"] == "EINVAL"
    assert data["reason"].startswith("invalid JSON at byte 26: ")
    assert "surrogate without its other half" in data["reason"]
    assert data["trace"] is None
    assert data["extra"] is None
    assert call(ws, "core.ping")["result"] == "pong"
    # The log doubles each backslash, as it does in every line.
    assert data["reason"].replace("\\", "\\\\") in server.log_text()


@pytest.mark.parametrize("message, reason", [
    ('"core.ping"', "a request must be a JSON object, got a string"),
    ('{"jsonrpc": "1.0", "id": 1, "method": "core.ping"}', "'jsonrpc' must be \"2.0\""),
    ('{"jsonrpc": "2.0", "id": [1], "method": "core.ping"}', "'id' must be a string, a number or null, got an array"),
    ('{"jsonrpc": "2.0", "id": 1, "method": 5}', "'method' must be a string"),
    ("[]", "empty batch"),
], ids=["string", "jsonrpc-1.0", "array-id", "number-method", "empty-batch"])
def test_invalid_request_carries_reason(ws, message, reason):
    ws.send(message)
    reply = json.loads(ws.recv())
    assert reply["error"]["code"] == -32600
    data = reply["error"]["data"]
    assert data["errname"] == "EINVAL"
    assert data["reason"] == reason
    assert data["trace"] is None


def test_batch_element_errors_carry_reason(ws):
    ws.send(json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "core.ping"}]))
    reply = json.loads(ws.recv())
    assert reply[0]["id"] == 1
    assert reply[0]["error"]["data"]["reason"] == "batch requests are not supported; send one request per message"


API_KEY = "1-" + "k3Y" * 21 + "z"
PASSWORD = "Tr0ub4dor&3"


@pytest.mark.parametrize("message", [
    '{"jsonrpc": "2.0", "id": 1, "method": "auth.login_with_api_key", "params": ["KEY"',
    '{"jsonrpc": "2.0", "id": 1, "method": "auth.login_with_api_key", "params": ["KEY\\q"]}',
    '{"jsonrpc": "2.0", "id": 1, "method": "auth.login_ex", "params": [{"api_key": "KEY", "api_key": "KEY"}]}',
    '{"jsonrpc": "2.0", "id": 1, "method": "vm.write_container_conf", "params": [{"password": "PASS\\ud83d"}]}',
    '{"jsonrpc": "2.0", "id": 1, "method": "vm.write_container_conf", "params": [{"password": "PASS\x01"}]}',
    '{"jsonrpc": "1.0", "id": 1, "method": "auth.login_with_api_key", "params": ["KEY"]}',
    '{"jsonrpc": "2.0", "id": ["KEY"], "method": "auth.login_with_api_key", "params": ["KEY"]}',
    '["KEY", "PASS"]',
], ids=["truncated", "bad-escape", "duplicate-key", "lone-surrogate", "control-character", "jsonrpc-1.0",
        "array-id", "batch"])
def test_rejection_reason_never_quotes_secrets(server, ws, message):
    ws.send(message.replace("KEY", API_KEY).replace("PASS", PASSWORD))
    text = ws.recv()
    json.loads(text)
    assert '"reason"' in text
    assert API_KEY not in text
    assert PASSWORD not in text
    assert API_KEY not in server.log_text()
    assert PASSWORD not in server.log_text()


def test_binary_message_with_invalid_utf8_rejected(ws):
    # JSON text must be UTF-8. A binary message is not checked as a text frame is, so
    # the parser itself must reject the byte FF instead of replacing it with U+FFFD,
    # which would change the id (or a path or a password) unseen.
    ws.send_binary(b'{"jsonrpc": "2.0", "id": "a\xffb", "method": "core.ping", "params": []}')
    reply = json.loads(ws.recv())
    assert reply["error"]["code"] == -32700
    assert reply["id"] is None
    assert call(ws, "core.ping", id="after")["result"] == "pong"


def test_binary_message_with_valid_utf8_accepted(ws):
    ws.send_binary(json.dumps({"jsonrpc": "2.0", "id": "\u00e9", "method": "core.ping", "params": []},
                              ensure_ascii=False).encode())
    assert json.loads(ws.recv()) == {"jsonrpc": "2.0", "id": "\u00e9", "result": "pong"}

def test_params_object_gets_invalid_params(ws):
    ws.send(json.dumps({"jsonrpc": "2.0", "id": 4, "method": "core.ping", "params": {"by": "name"}}))
    reply = json.loads(ws.recv())
    assert reply["id"] == 4
    assert reply["error"]["code"] == -32602


def test_validation_messages_name_types_in_english(ws):
    # auth.* runs before login, so the TCP case needs no key.
    reply = call(ws, "auth.login_with_api_key", {"key": "x"})
    assert reply["error"]["data"]["extra"][0][1] == "expected a string, got an object"
    reply = call(ws, "auth.login_with_api_key", "x", 2)
    assert reply["error"]["data"]["extra"][0][1] == "expected at most 1 parameter, got 2"


def test_unknown_method_gets_method_not_found(ws):
    reply = call(ws, "no.such_method")
    assert reply["error"]["code"] == -32601
    assert reply["error"]["message"] == "Method does not exist"


def test_fragmented_message_with_ping_between(ws):
    message = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "core.ping", "params": []}).encode()
    ws.sock.sendall(raw_frame(OPCODE_TEXT, message[:5], fin=False))
    ws.sock.sendall(raw_frame(OPCODE_PING, b"x"))
    opcode, data = read_frame(ws)
    assert opcode == websocket.ABNF.OPCODE_PONG
    assert data == b"x"
    ws.sock.sendall(raw_frame(OPCODE_CONTINUATION, message[5:]))
    opcode, data = read_frame(ws)
    assert opcode == OPCODE_TEXT
    assert json.loads(data)["result"] == "pong"


def test_hello_split_in_two_fragments_is_handled(ws):
    # "Hel" + "lo" is not JSON, so the server replies to the handled message with -32700.
    ws.sock.sendall(raw_frame(OPCODE_TEXT, b"Hel", fin=False))
    ws.sock.sendall(raw_frame(OPCODE_PING, b"x"))
    assert read_frame(ws) == (websocket.ABNF.OPCODE_PONG, b"x")
    ws.sock.sendall(raw_frame(OPCODE_CONTINUATION, b"lo"))
    opcode, data = read_frame(ws)
    assert json.loads(data)["error"]["code"] == -32700


@pytest.mark.parametrize("frames", [
    [raw_frame(OPCODE_PING, b"x", fin=False)],
    [raw_frame(OPCODE_TEXT, b"a", fin=False), raw_frame(OPCODE_TEXT, b"b")],
    [raw_frame(OPCODE_CONTINUATION, b"a")],
    [raw_frame(OPCODE_TEXT, b"{}", rsv=0x40)],
    [raw_frame(0x3, b"")],
], ids=["fragmented-ping", "text-inside-open-message", "stray-continuation", "reserved-bit", "reserved-opcode"])
def test_protocol_errors_close_1002(ws, frames):
    for frame in frames:
        ws.sock.sendall(frame)
    assert close_code(ws) == 1002


def test_utf8_checked_across_fragments(ws):
    ws.sock.sendall(raw_frame(OPCODE_TEXT, b'"\xf0\x90', fin=False))
    ws.sock.sendall(raw_frame(OPCODE_CONTINUATION, b'\x80\x80"'))
    # The message is a valid JSON string (U+10000) but not a request: -32600, not a close.
    opcode, data = read_frame(ws)
    assert opcode == OPCODE_TEXT
    assert json.loads(data)["error"]["code"] == -32600


@pytest.mark.parametrize("payload", [b"\xc0\xaf", b"\xed\xa0\x80"], ids=["overlong", "surrogate"])
def test_invalid_utf8_closes_1007(ws, payload):
    ws.sock.sendall(raw_frame(OPCODE_TEXT, payload))
    assert close_code(ws) == 1007


def test_close_reason_not_utf8_closes_1007(ws):
    ws.sock.sendall(raw_frame(OPCODE_CLOSE, b"\x03\xe8\xff"))
    assert close_code(ws) == 1007


def test_empty_close_answered_with_empty_close(ws):
    ws.sock.sendall(b"\x88\x80\x01\x02\x03\x04")
    assert ws.sock.recv(16) == b"\x88\x00"


def test_close_1000_echoed(ws):
    ws.sock.sendall(raw_frame(OPCODE_CLOSE, b"\x03\xe8"))
    assert close_code(ws) == 1000


@pytest.mark.parametrize("code", [1012, 1013, 1014])
def test_registered_close_code_echoed(server, code):
    # IANA registered 1012 (service restart), 1013 (try again later) and 1014 (bad
    # gateway) after RFC 6455; the websockets library sends them, so they are no
    # protocol error. The client here is websockets itself, over the Unix socket.
    sock = server.unix_socket()
    with websockets.sync.client.connect("ws://localhost/api/current", sock=sock) as client:
        client.close(code=code)
        assert client.protocol.close_rcvd.code == code

def test_close_with_one_byte_payload_closes_1002(ws):
    ws.sock.sendall(raw_frame(OPCODE_CLOSE, b"\x03"))
    assert close_code(ws) == 1002


def test_message_of_70000_bytes_in_16_bit_form(ws):
    # Two frames in the 16-bit length form (65,535 + 4,465 bytes), one message.
    body = '{"jsonrpc":"2.0","id":9,"method":"core.ping","params":[]}'
    message = (body + " " * (70000 - len(body))).encode()
    ws.sock.sendall(raw_frame(OPCODE_TEXT, message[:65535], fin=False))
    ws.sock.sendall(raw_frame(OPCODE_CONTINUATION, message[65535:]))
    opcode, data = read_frame(ws)
    assert json.loads(data)["result"] == "pong"


def test_message_under_limit_in_64_bit_form(ws):
    # The default limit is 1,048,576 bytes; this message is 16 bytes under it.
    body = '{"jsonrpc":"2.0","id":5,"method":"core.ping","params":[]}'
    message = (body + " " * (1048576 - 16 - len(body))).encode()
    ws.sock.sendall(raw_frame(OPCODE_TEXT, message, length_form=64))
    opcode, data = read_frame(ws)
    assert json.loads(data)["result"] == "pong"


def test_message_over_limit_closes_1009(ws):
    ws.sock.sendall(raw_frame(OPCODE_TEXT, b" " * (1048576 + 1)))
    assert close_code(ws) == 1009


def test_fragments_over_limit_close_1009(ws):
    ws.sock.sendall(raw_frame(OPCODE_TEXT, b" " * 600000, fin=False))
    ws.sock.sendall(raw_frame(OPCODE_CONTINUATION, b" " * 600000))
    assert close_code(ws) == 1009


def test_64_bit_length_with_top_bit_closes_1002(ws):
    ws.sock.sendall(b"\x81\xff\x80\x00\x00\x00\x00\x00\x00\x01\x01\x02\x03\x04")
    assert close_code(ws) == 1002


def test_unmasked_client_frame_closes_1002(ws):
    ws.sock.sendall(raw_frame(OPCODE_TEXT, b"{}", mask=False))
    assert close_code(ws) == 1002
