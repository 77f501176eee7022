"""The vm.* methods on real files: sharefs, inflation as a job (with a subscriber that
checks every state change, and an abort), resize, and configuration removal."""

import gzip
import json
import os
import subprocess
import time

import pytest

from conftest import call, result

MIB = 1 << 20
GIB = 1 << 30


def make_pool(server, name="tank"):
    path = os.path.join(server.pools_root, name)
    os.makedirs(path, exist_ok=True)
    return path


def make_image(path, size, data_at=()):
    """Writes a sparse RAW image of `size` bytes with 4 KiB of pattern at each offset in
    `data_at`, and gzips it with the real gzip tool; returns the .gz path."""
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset in data_at:
            handle.seek(offset)
            handle.write(bytes(range(256)) * 16)
    subprocess.run(["gzip", "-1", "-k", path], check=True)
    return path + ".gz"


def wait_for_job(ws, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = result(ws, "core.get_jobs", [["id", "=", job_id]], {"get": True})
        if job["state"] in ("SUCCESS", "FAILED", "ABORTED"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_sharefs_activation(server):
    make_pool(server, "tank")
    make_pool(server, "alpha")
    ws = server.connect()
    assert result(ws, "vm.get_sharefs") is False
    assert result(ws, "vm.activate_sharefs") is True
    # Without a pool name the first pool by name is chosen.
    expected = os.path.join(server.pools_root, "alpha", ".bhyve_containers")
    assert result(ws, "vm.get_sharefs") == expected
    assert os.path.isdir(os.path.join(expected, "iso_files"))
    assert result(ws, "vm.activate_sharefs", "tank") is True
    assert result(ws, "vm.get_sharefs") == os.path.join(server.pools_root, "tank", ".bhyve_containers")


def test_activate_unknown_pool_fails(server):
    ws = server.connect()
    reply = call(ws, "vm.activate_sharefs", "nosuchpool")
    assert reply["error"]["code"] == -32001
    assert "nosuchpool" in reply["error"]["data"]["reason"]


def test_decompress_job_with_subscriber(server):
    tank = make_pool(server)
    image = make_image(os.path.join(tank, "image.raw"), 64 * MIB, data_at=(0, 40 * MIB))
    ws = server.connect()
    watcher = server.connect()
    result(watcher, "core.subscribe", "core.get_jobs")
    job_id = result(ws, "vm.decompress_gzip", image, "tank/disk.raw")
    states = []
    while True:
        message = json.loads(watcher.recv())
        if message.get("method") != "collection_update" or message["params"]["id"] != job_id:
            continue
        states.append(message["params"]["fields"]["state"])
        if states[-1] in ("SUCCESS", "FAILED", "ABORTED"):
            final = message["params"]["fields"]
            break
    assert states[0] == "WAITING"
    assert "RUNNING" in states
    assert states[-1] == "SUCCESS", final
    assert final["result"]["bytes_written"] == 64 * MIB
    assert final["result"]["path"] == "tank/disk.raw"
    assert final["progress"]["percent"] == 100
    assert subprocess.run(["cmp", os.path.join(tank, "image.raw"), os.path.join(tank, "disk.raw")]).returncode == 0


def test_decompress_error_names_caller_path(server):
    tank = make_pool(server)
    with open(os.path.join(tank, "broken.gz"), "wb") as handle:
        handle.write(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"garbage")
    ws = server.connect()
    job = wait_for_job(ws, result(ws, "vm.decompress_gzip", "tank/broken.gz", "tank/out.raw"))
    assert job["state"] == "FAILED"
    assert "/proc/self/fd" not in job["error"]
    assert not os.path.exists(os.path.join(tank, "out.raw"))


def test_decompress_warns_of_trailing_data(server):
    tank = make_pool(server)
    payload = b"disk image bytes " * 4096
    with open(os.path.join(tank, "padded.gz"), "wb") as handle:
        handle.write(gzip.compress(payload) + b"NOT-GZIP-TRAILER")
    ws = server.connect()
    job_id = result(ws, "vm.decompress_gzip", "tank/padded.gz", "tank/out.raw")
    job = wait_for_job(ws, job_id)
    assert job["state"] == "SUCCESS", job
    assert job["result"]["bytes_written"] == len(payload)
    warnings = job["result"]["warnings"]
    assert len(warnings) == 1, warnings
    assert "16 bytes of trailing data" in warnings[0]
    assert "'tank/padded.gz'" in warnings[0]
    assert "/proc/self/fd" not in warnings[0]
    # The server's log names the job and the path the caller sent, as the result does.
    logged = [line for line in server.log_text().splitlines() if "trailing data" in line]
    assert len(logged) == 1, logged
    assert f"job {job_id} vm.decompress_gzip" in logged[0]
    assert "'tank/padded.gz'" in logged[0]
    assert "/proc/self/fd" not in logged[0]


def test_abort_inflation_removes_temporary_file(server):
    tank = make_pool(server)
    # 64 gzip members of 64 MiB of zeros each: a valid 4 GiB stream built in a second.
    member = gzip.compress(bytes(64 * MIB), compresslevel=1)
    with open(os.path.join(tank, "big.raw.gz"), "wb") as handle:
        for _ in range(64):
            handle.write(member)
    ws = server.connect()
    job_id = result(ws, "vm.decompress_gzip", "tank/big.raw.gz", "tank/disk.raw")
    while result(ws, "core.get_jobs", [["id", "=", job_id]], {"get": True})["progress"]["percent"] in (None, 0):
        time.sleep(0.02)
    started = time.monotonic()
    result(ws, "core.job_abort", job_id)
    job = wait_for_job(ws, job_id)
    assert job["state"] == "ABORTED"
    assert time.monotonic() - started < 3
    assert sorted(os.listdir(tank)) == ["big.raw.gz"]


def test_abort_during_zero_padding_scan(server):
    # A gzip member followed by 1 TiB of zero padding, stored as a hole. After the member,
    # the inflater reads the padding to tell it from trailing data. An abort must stop
    # that scan too, so the job does not run on until the whole tail is read.
    tank = make_pool(server)
    content = os.urandom(MIB)
    source = os.path.join(tank, "padded.raw.gz")
    with open(source, "wb") as handle:
        handle.write(gzip.compress(content, compresslevel=1))
        handle.truncate(1 << 40)
    ws = server.connect()
    job_id = result(ws, "vm.decompress_gzip", "tank/padded.raw.gz", "tank/disk.raw")
    # The member takes milliseconds, so after 2 seconds the job is in the scan, even
    # where its progress does not show the member's output yet.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        job = result(ws, "core.get_jobs", [["id", "=", job_id]], {"get": True})
        assert job["state"] in ("WAITING", "RUNNING"), job
        if (job["progress"]["extra"] or {}).get("written") == len(content):
            break
        time.sleep(0.02)
    result(ws, "core.job_abort", job_id)
    job = wait_for_job(ws, job_id, timeout=30)
    assert job["state"] == "ABORTED"
    assert sorted(os.listdir(tank)) == ["padded.raw.gz"]


def test_raw_resize_rules(server):
    tank = make_pool(server)
    disk = os.path.join(tank, "disk.raw")
    with open(disk, "wb") as handle:
        handle.truncate(MIB)
    ws = server.connect()
    # A bare number counts GiB, as the NAS UI sends it.
    assert result(ws, "vm.raw_resize", "tank/disk.raw", "2") is True
    assert os.path.getsize(disk) == 2 * GIB
    # "0", an empty string or no size keep the current size.
    for size in ("0", ""):
        assert result(ws, "vm.raw_resize", disk, size) is True
        assert os.path.getsize(disk) == 2 * GIB
    # A smaller size is rejected and the disk keeps its size.
    reply = call(ws, "vm.raw_resize", disk, "1")
    assert "error" in reply
    assert os.path.getsize(disk) == 2 * GIB
    reply = call(ws, "vm.raw_resize", disk, "12 parsecs")
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["extra"][0][0] == "size"


def test_raw_resize_smaller_names_service_fix(server):
    # vm.raw_resize never shrinks, so its message must not point the caller at the
    # command line's --shrink, and must give the smallest size it accepts.
    tank = make_pool(server)
    with open(os.path.join(tank, "disk.raw"), "wb") as handle:
        handle.truncate(2 * GIB)
    ws = server.connect()
    reply = call(ws, "vm.raw_resize", "tank/disk.raw", "1")
    reason = reply["error"]["data"]["reason"]
    assert reply["error"]["data"]["errname"] == "EINVAL"
    assert "--shrink" not in reason
    assert "tank/disk.raw" in reason
    assert f"at least {2 * GIB} bytes" in reason


def test_rm_container_conf(server):
    tank = make_pool(server)
    ws = server.connect()
    result(ws, "vm.activate_sharefs", "tank")
    configs = os.path.join(tank, ".bhyve_containers", "configs")
    os.makedirs(os.path.join(configs, "7_web", "grub"))
    os.makedirs(os.path.join(configs, "17_other"))
    assert result(ws, "vm.rm_container_conf", 7) is True
    assert os.listdir(configs) == ["17_other"]
    assert call(ws, "vm.rm_container_conf", -1)["error"]["code"] == -32602


def test_sigterm_during_inflation_leaves_no_file(server):
    tank = make_pool(server)
    member = gzip.compress(bytes(64 * MIB), compresslevel=1)
    with open(os.path.join(tank, "big.raw.gz"), "wb") as handle:
        for _ in range(64):
            handle.write(member)
    ws = server.connect()
    job_id = result(ws, "vm.decompress_gzip", "tank/big.raw.gz", "tank/disk.raw")
    while result(ws, "core.get_jobs", [["id", "=", job_id]], {"get": True})["progress"]["percent"] in (None, 0):
        time.sleep(0.02)
    server.stop()
    assert server.process.returncode == 0
    assert sorted(os.listdir(tank)) == ["big.raw.gz"]
    assert "stopped" in server.log_text()


@pytest.mark.parametrize("pool, expected", [("../x", "cannot contain '/'"), (".hidden", "cannot start with '.'"),
                                            (5, "expected the name of a pool as a string"),
                                            ("x" * 256, "at most 255 bytes"), ("\u00e9" * 128, "at most 255 bytes")])
def test_invalid_pool_rejected_while_sharefs_active(server, pool, expected):
    """An active sharefs makes `pool` unused, but a name that can never be valid is
    still rejected, before any job starts."""
    make_pool(server)
    ws = server.connect()
    result(ws, "vm.activate_sharefs", "tank")
    reply = call(ws, "vm.create_container", {"vm_id": 9, "vm_name": "x", "raw_path": "tank/x.raw", "size": "1",
                                             "password": "pw", "pool": pool})
    assert "error" in reply
    assert expected in reply["error"]["data"]["reason"]
    assert not os.path.exists(os.path.join(server.pools_root, "tank", "x.raw"))


@pytest.mark.parametrize("vm_id, shown", [(-1, "got -1"), (0, "got 0"), (1.5, "got 1.5"), ("1", 'got "1"'),
                                          (2 ** 31, "got 2147483648"), (None, "got null")])
def test_guest_object_names_invalid_vm_id(server, vm_id, shown):
    make_pool(server)
    ws = server.connect()
    reply = call(ws, "vm.write_container_conf", {"vm_id": vm_id, "vm_name": "x", "raw_path": "tank/x.raw",
                                                 "password": "pw"})
    reason = reply["error"]["data"]["reason"]
    assert shown in reason
    assert "from 1 to 2147483647" in reason


def test_guest_object_names_wrong_type(server):
    make_pool(server)
    ws = server.connect()
    reply = call(ws, "vm.write_container_conf", {"vm_id": 1, "vm_name": 5, "raw_path": "tank/x.raw",
                                                 "password": "pw"})
    assert reply["error"]["data"]["reason"] == "[EINVAL] vm_name: expected a string, got a number"


def test_rm_container_conf_names_range(server):
    ws = server.connect()
    reply = call(ws, "vm.rm_container_conf", 2 ** 31)
    assert "from 1 to 2147483647, got 2147483648" in reply["error"]["data"]["reason"]


@pytest.mark.parametrize("method, accepted", [
    ("vm.create_container", "vm_id, vm_name, image, raw_path, password, size and pool"),
    ("vm.write_container_conf", "vm_id, vm_name, image, raw_path and password"),
])
def test_guest_object_rejects_unknown_key(server, method, accepted):
    """A misspelt key ("sise") would otherwise be dropped without a word and the guest
    would get defaults the caller never chose."""
    make_pool(server)
    ws = server.connect()
    result(ws, "vm.activate_sharefs", "tank")
    reply = call(ws, method, {"vm_id": 9, "vm_name": "x", "raw_path": "tank/x.raw", "password": "pw", "sise": "20"})
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["extra"][0][0] == "sise"
    reason = reply["error"]["data"]["reason"]
    assert "unknown key" in reason
    assert method in reason
    assert accepted in reason
    assert result(ws, "core.get_jobs") == []
    assert not os.path.exists(os.path.join(server.pools_root, "tank", "x.raw"))


def test_write_container_conf_rejects_size(server):
    """vm.write_container_conf never resizes, so a size sent to it is rejected rather
    than ignored."""
    make_pool(server)
    ws = server.connect()
    result(ws, "vm.activate_sharefs", "tank")
    reply = call(ws, "vm.write_container_conf", {"vm_id": 9, "vm_name": "x", "raw_path": "tank/x.raw",
                                                 "password": "pw", "size": "20"})
    assert reply["error"]["data"]["extra"][0][0] == "size"
    assert "vm.create_container" in reply["error"]["data"]["reason"]


@pytest.mark.parametrize("size", [" 2", "2 ", "\t2", "2G\t", "  "])
def test_raw_resize_rejects_whitespace(server, size):
    tank = make_pool(server)
    disk = os.path.join(tank, "disk.raw")
    with open(disk, "wb") as handle:
        handle.truncate(MIB)
    ws = server.connect()
    reply = call(ws, "vm.raw_resize", "tank/disk.raw", size)
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["extra"][0][0] == "size"
    message = reply["error"]["data"]["extra"][0][1]
    assert f"'{size}'" in message
    assert "whitespace" in message
    assert ("remove the whitespace" in message) or ("empty string" in message)
    assert os.path.getsize(disk) == MIB


def test_create_container_rejects_size_with_whitespace(server):
    make_pool(server)
    ws = server.connect()
    result(ws, "vm.activate_sharefs", "tank")
    reply = call(ws, "vm.create_container", {"vm_id": 9, "vm_name": "x", "raw_path": "tank/x.raw", "size": " 20",
                                             "password": "pw"})
    assert reply["error"]["data"]["extra"][0][0] == "size"
    assert "remove the whitespace: '20'" in reply["error"]["data"]["extra"][0][1]
    assert result(ws, "core.get_jobs") == []


def test_create_container_raw_path_space(server):
    """A RAW path with a space cannot go into device.map, so the call fails at once
    with the hint, instead of returning a job that fails before its download."""
    make_pool(server)
    ws = server.connect()
    result(ws, "vm.activate_sharefs", "tank")
    reply = call(ws, "vm.create_container", {"vm_id": 9, "vm_name": "x", "raw_path": "tank/my vm.raw", "size": "1",
                                             "password": "pw"})
    reason = reply["error"]["data"]["reason"]
    assert "contains a space" in reason
    assert "my_vm.raw" in reason
    assert result(ws, "core.get_jobs") == []
    assert not os.path.exists(os.path.join(server.pools_root, "tank", "my vm.raw"))


def test_log_names_callers_paths(server):
    """The info log is for the NAS admin, so it names the paths the caller sent, not the
    /proc/self/fd names the service hands to ImageCore."""
    tank = make_pool(server)
    make_image(os.path.join(tank, "image.raw"), 4 * MIB, data_at=(0,))
    ws = server.connect()
    job = wait_for_job(ws, result(ws, "vm.decompress_gzip", "tank/image.raw.gz", "tank/disk.raw"))
    assert job["state"] == "SUCCESS", job
    assert result(ws, "vm.raw_resize", "tank/disk.raw", "8M") is True
    log = server.log_text()
    assert "/proc/self/fd" not in log
    assert "published 'tank/disk.raw'" in log
    assert "resized 'tank/disk.raw'" in log


def test_write_container_conf_space_in_raw_path_hint(server):
    """grub-bhyve ends a device.map path at its first space, so such a path is rejected.
    The hint must ask for a path without spaces, not for an absolute path."""
    tank = make_pool(server)
    with open(os.path.join(tank, "my vm.raw"), "wb") as handle:
        handle.truncate(MIB)
    ws = server.connect()
    result(ws, "vm.activate_sharefs", "tank")
    reply = call(ws, "vm.write_container_conf", {"vm_id": 9, "vm_name": "x", "raw_path": "tank/my vm.raw",
                                                 "password": "pw"})
    reason = reply["error"]["data"]["reason"]
    assert "contains a space" in reason
    assert "without spaces" in reason
    assert "my_vm.raw" in reason
    assert "give the absolute path" not in reason


@pytest.mark.parametrize("key, meant", [
    (" vm_id", "vm_id"), ("raw_path ", "raw_path"), ("VM_ID", "vm_id"), ("Password", "password"),
    ("vm\u200b_id", "vm_id"), ("vm_name\n", "vm_name"),
])
def test_guest_object_names_near_miss_key(server, key, meant):
    """A key that differs from an accepted one only in letter case, whitespace or an
    invisible character looks like the accepted key in a bare message. So the message
    quotes it with such characters escaped and names the key the caller meant."""
    make_pool(server)
    ws = server.connect()
    result(ws, "vm.activate_sharefs", "tank")
    request = {"vm_id": 9, "vm_name": "x", "raw_path": "tank/x.raw", "password": "pw"}
    request[key] = request.pop(meant)
    reply = call(ws, "vm.write_container_conf", request)
    assert reply["error"]["data"]["extra"][0][0] == key
    message = reply["error"]["data"]["extra"][0][1]
    escaped = key.replace("\u200b", "\\u{200B}").replace("\n", "\\u{A}")
    assert f"unknown key '{escaped}'" in message
    assert f"did you mean '{meant}'?" in message
    assert "\n" not in message


def test_guest_object_quotes_empty_key(server):
    make_pool(server)
    ws = server.connect()
    result(ws, "vm.activate_sharefs", "tank")
    reply = call(ws, "vm.write_container_conf", {"vm_id": 9, "vm_name": "x", "raw_path": "tank/x.raw",
                                                 "password": "pw", "": 1})
    message = reply["error"]["data"]["extra"][0][1]
    assert "unknown key ''" in message
    assert "did you mean" not in message
