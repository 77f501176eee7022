"""Load: 100 concurrent connections, 20 of them subscribed to job events, while an
inflation job runs. Every subscriber must see the job's final state, every other
connection must keep getting replies, and the server's memory must stay bounded."""

import gzip
import json
import os
import threading
import time

from conftest import result

MIB = 1 << 20


def test_hundred_connections_during_inflation(server):
    tank = os.path.join(server.pools_root, "tank")
    os.makedirs(tank)
    # 64 members of 64 MiB of zeros: a 4 GiB image, the size of the RancherOS image.
    member = gzip.compress(bytes(64 * MIB), compresslevel=1)
    with open(os.path.join(tank, "image.gz"), "wb") as handle:
        for _ in range(64):
            handle.write(member)

    connections = [server.connect(tcp=index % 2 == 1, timeout=60) for index in range(100)]
    key = server.create_api_key("load")
    for index, ws in enumerate(connections):
        if index % 2 == 1:
            assert result(ws, "auth.login_with_api_key", key) is True
    subscribers = connections[:20]
    for ws in subscribers:
        result(ws, "core.subscribe", "core.get_jobs")
    memory_before = server.memory_kib()

    job_id = result(connections[50], "vm.decompress_gzip", "tank/image.gz", "tank/disk.raw")
    finals = {}
    errors = []

    def follow(index, ws):
        try:
            while True:
                message = json.loads(ws.recv())
                params = message.get("params", {})
                if message.get("method") == "collection_update" and params.get("id") == job_id:
                    if params["fields"]["state"] in ("SUCCESS", "FAILED", "ABORTED"):
                        finals[index] = params["fields"]["state"]
                        return
        except Exception as error:  # recorded and asserted below
            errors.append(error)

    def ping(ws, rounds):
        try:
            for _ in range(rounds):
                assert result(ws, "core.ping") == "pong"
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=follow, args=(index, ws)) for index, ws in enumerate(subscribers)]
    threads += [threading.Thread(target=ping, args=(ws, 20)) for ws in connections[20:]]
    assert result(connections[99], "core.get_jobs", [["id", "=", job_id]], {"get": True})["state"] != "SUCCESS"
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert all(not thread.is_alive() for thread in threads)
    assert finals == {index: "SUCCESS" for index in range(20)}
    assert time.monotonic() - started < 60
    assert os.path.getsize(os.path.join(tank, "disk.raw")) == 4 << 30
    # Connections and events must not grow memory by more than 64 MiB (an estimate of
    # what 100 idle connections and their threads may take, with a wide margin).
    assert server.memory_kib() - memory_before < 64 * 1024
    for ws in connections:
        ws.close()


def test_idle_subscribers_keep_events_prompt(server):
    # 20 subscribers that never read, while 2000 short jobs produce about 6000 events.
    idle = [server.connect(timeout=60) for _ in range(20)]
    for ws in idle:
        result(ws, "core.subscribe", "core.get_jobs")
    worker = server.connect(timeout=60)
    for index in range(2000):
        worker.send(json.dumps({"jsonrpc": "2.0", "id": index, "method": "test.sleep", "params": [0]}))
        worker.recv()

    # A new job's `added` event must not wait behind a backlog of older events.
    watcher = server.connect(timeout=60)
    result(watcher, "core.subscribe", "core.get_jobs")
    started = time.monotonic()
    watcher.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "test.sleep", "params": [0]}))
    while json.loads(watcher.recv()).get("method") != "collection_update":
        pass
    assert time.monotonic() - started < 1
    assert server.memory_kib() < 200 * 1024
