"""End-to-end tests of `imgtool provision` on a RancherOS-shaped 4 GiB image.

The image is built from real parts by scripts/make-rancher-like-image (a Debian kernel,
a busybox initramfs, real files from /usr in an ext4 filesystem labelled
RANCHER_STATE), served by a real nginx on 127.0.0.1, and the result is checked with
tools imgtool did not write: sha256sum, sfdisk, e2fsck, debugfs, qemu-img and
grub-script-check.

The image is cached between runs in $IMGTOOL_E2E_CACHE (default
/var/tmp/imgtool-e2e-image); building it takes about a minute.
"""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
IMGTOOL = os.environ.get("IMGTOOL", str(REPOSITORY / ".build" / "debug" / "imgtool"))
CACHE = Path(os.environ.get("IMGTOOL_E2E_CACHE", "/var/tmp/imgtool-e2e-image"))
PASSWORD = b"e2e-password\n"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_env(path):
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


@pytest.fixture(scope="module")
def image():
    """The compressed image, its SHA256SUMS and its facts (image.env)."""
    if not (CACHE / "image.env").exists():
        subprocess.run([str(REPOSITORY / "scripts" / "make-rancher-like-image"), str(CACHE),
                        "--size", "4G", "--data-mb", "200"], check=True)
    facts = read_env(CACHE / "image.env")
    facts["dir"] = CACHE
    return facts


class Server:
    """A real nginx serving a directory on 127.0.0.1, through scripts/serve-directory."""

    def __init__(self, directory, rate=None):
        self.port = free_port()
        arguments = [str(REPOSITORY / "scripts" / "serve-directory"), str(directory), str(self.port)]
        if rate:
            arguments.append(rate)
        self.process = subprocess.Popen(arguments, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start on port %d" % self.port)

    def url(self, name):
        return "http://127.0.0.1:%d/%s" % (self.port, name)

    def stop(self):
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)


class RestartingServer:
    """A fault server of our own on 127.0.0.1, whose file is replaced during the download.
    The first request for the image ends after half of it. Every later one ignores Range
    and sends the whole file with a new ETag."""

    def __init__(self, directory):
        image = (directory / "demo-rancher.img.gz").read_bytes()
        sums = (directory / "SHA256SUMS").read_bytes()
        requests = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *arguments):
                pass

            def do_GET(self):
                if self.path.endswith("SHA256SUMS"):
                    body, etag, length = sums, '"sums"', len(sums)
                else:
                    requests.append(self.path)
                    first = len(requests) == 1
                    body, etag = image, '"v1"' if first else '"v2"'
                    length = len(image) // 2 if first else len(image)
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body[:length])
                except OSError:
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name):
        return "http://127.0.0.1:%d/%s" % (self.port, name)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(image):
    started = Server(image["dir"])
    yield started
    started.stop()


@pytest.fixture
def slow_server(image):
    """nginx limited to 20 MB/s per connection, so a download lasts a few seconds."""
    started = Server(image["dir"], rate="20m")
    yield started
    started.stop()


class Site:
    """A scratch NAS: a pools root with one pool, a state directory and a catalog."""

    def __init__(self, root, image, server, checksum_name="SHA256SUMS"):
        self.root = root
        self.pools = root / "pools"
        (self.pools / "tank").mkdir(parents=True)
        self.state = root / "state"
        self.state.mkdir()
        self.vms = root / "vms"
        self.vms.mkdir()
        self.catalog = root / "catalog.json"
        self.catalog.write_text(json.dumps({"extendsDefault": True, "images": [{
            "name": "DemoOS", "version": "v1.0",
            "url": server.url("demo-rancher.img.gz"), "checksumURL": server.url(checksum_name),
            "kernel": image["KERNEL"], "initrd": image["INITRD"],
            "kernelArguments": ["printk.devkmsg=on", "rancher.state.dev=LABEL=RANCHER_STATE"],
            "passwordForm": "sha512-crypt", "splitsCommandLineOnSpaces": False}]}))
        self.sharefs = self.pools / "tank" / ".bhyve_containers"

    def environment(self):
        environment = dict(os.environ)
        environment.update(IMGTOOL_POOLS_ROOT=str(self.pools), IMGTOOL_STATE_DIR=str(self.state),
                           IMGTOOL_CATALOG=str(self.catalog))
        return environment

    def arguments(self, raw, vm_id=1, name="demo", size="20G"):
        return [IMGTOOL, "provision", "DemoOS@v1.0", "--raw", str(raw), "--size", size, "--vm-id", str(vm_id),
                "--vm-name", name, "--password-stdin", "--progress", "json"]

    def provision(self, raw, **options):
        return subprocess.run(self.arguments(raw, **options), input=PASSWORD, capture_output=True,
                              env=self.environment(), timeout=600)

    def start(self, raw, **options):
        process = subprocess.Popen(self.arguments(raw, **options), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=self.environment())
        process.stdin.write(PASSWORD)
        process.stdin.close()
        return process

    def leftovers(self):
        """Temporary files of imgtool anywhere under the site."""
        return sorted(str(path) for path in self.root.rglob("*.imgtool-*.tmp"))


def summary_of(result):
    """The final JSON line of `provision --progress json`."""
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def partition_offset(raw):
    dump = subprocess.run(["sfdisk", "-d", str(raw)], capture_output=True, text=True, check=True).stdout
    start = re.search(r"start=\s*(\d+)", dump)
    return int(start.group(1)) * 512


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def provisioned(image, tmp_path_factory):
    """One provisioning run on a fresh site, shared by the checks below."""
    server = Server(image["dir"])
    try:
        site = Site(tmp_path_factory.mktemp("provisioned"), image, server)
        raw = site.vms / "demo.raw"
        result = site.provision(raw)
    finally:
        server.stop()
    return site, raw, result


def test_provision_succeeds(provisioned):
    _, _, result = provisioned
    assert result.returncode == 0, result.stderr.decode()


def test_raw_prefix_matches_original_image(provisioned, image):
    # The first RAW_SIZE bytes are the inflated image; the rest is the growth, zeros.
    _, raw, _ = provisioned
    head = subprocess.Popen(["head", "-c", image["RAW_SIZE"], str(raw)], stdout=subprocess.PIPE)
    digest = subprocess.run(["sha256sum"], stdin=head.stdout, capture_output=True, text=True, check=True).stdout
    head.wait()
    assert digest.split()[0] == image["RAW_SHA256"]


def test_sfdisk_shows_linux_partition(provisioned):
    _, raw, _ = provisioned
    dump = subprocess.run(["sfdisk", "-d", str(raw)], capture_output=True, text=True, check=True).stdout
    assert "type=83" in dump


def test_e2fsck_is_clean(provisioned):
    _, raw, _ = provisioned
    check = subprocess.run(["e2fsck", "-fn", "%s?offset=%d" % (raw, partition_offset(raw))], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_debugfs_lists_kernel_and_initrd_from_grub_cfg(provisioned, image):
    site, raw, _ = provisioned
    grub_cfg = (site.sharefs / "configs" / "1_demo" / "grub" / "grub.cfg").read_text()
    kernel = re.search(r"linux\s+/boot/(\S+)", grub_cfg).group(1)
    initrd = re.search(r"initrd\s+/boot/(\S+)", grub_cfg).group(1)
    listing = subprocess.run(["debugfs", "-R", "ls -l /boot", "%s?offset=%d" % (raw, partition_offset(raw))],
                             capture_output=True, text=True, check=True).stdout
    assert kernel == image["KERNEL"]
    assert initrd == image["INITRD"]
    assert kernel in listing
    assert initrd in listing


def test_qemu_img_reports_requested_size(provisioned):
    _, raw, _ = provisioned
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(raw)], capture_output=True,
                                     check=True).stdout)
    assert info["virtual-size"] == 20 * 1024 ** 3


def test_allocation_is_close_to_image_data(provisioned, image):
    # The 4 GiB image carries about 300 MB of filesystem data and metadata. The 20 GiB
    # disk must allocate about that, far below the 4 GiB that a non-sparse copy takes.
    _, raw, _ = provisioned
    allocated = os.stat(raw).st_blocks * 512
    assert allocated < 512 * 1024 ** 2
    assert allocated > 100 * 1024 ** 2


def test_grub_script_check_accepts_grub_cfg(provisioned):
    site, _, _ = provisioned
    check = subprocess.run(["grub-script-check", str(site.sharefs / "configs" / "1_demo" / "grub" / "grub.cfg")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_device_map_names_raw_file(provisioned):
    site, raw, _ = provisioned
    assert (site.sharefs / "configs" / "1_demo" / "device.map").read_text() == "(hd0) %s\n" % raw


def test_password_is_not_in_clear(provisioned):
    site, _, result = provisioned
    grub_cfg = (site.sharefs / "configs" / "1_demo" / "grub" / "grub.cfg").read_text()
    assert "e2e-password" not in grub_cfg
    assert b"e2e-password" not in result.stdout + result.stderr


def test_summary_reports_steps_and_overlap(provisioned):
    _, _, result = provisioned
    summary = summary_of(result)
    names = [step["name"] for step in summary["steps"]]
    assert names == ["check", "sharefs", "download", "inflate", "resize", "grub", "publish"]
    assert summary["overlap_seconds"] > 0


def test_no_temporary_files_remain(provisioned):
    site, _, _ = provisioned
    assert site.leftovers() == []


def test_existing_raw_is_refused_before_work(image, server, tmp_path):
    site = Site(tmp_path, image, server)
    raw = site.vms / "demo.raw"
    raw.write_bytes(b"\xff" * 4096)
    result = site.provision(raw)
    assert result.returncode == 73
    assert raw.read_bytes() == b"\xff" * 4096
    # Refused before any work: no sharefs was activated, nothing was downloaded.
    assert not site.sharefs.exists()


def test_invalid_raw_path_is_refused_before_work(image, server, tmp_path):
    # grub-bhyve's device.map reader ends a path at its first space, so such a RAW path
    # is rejected in the first step, before the sharefs exists or a byte is downloaded.
    site = Site(tmp_path, image, server)
    raw = site.vms / "my disk.raw"
    result = site.provision(raw)
    assert result.returncode == 64
    assert b"space" in result.stderr
    assert not raw.exists()
    assert not site.sharefs.exists()


def test_kill_during_download_then_rerun_resumes(image, slow_server, tmp_path):
    site = Site(tmp_path, image, slow_server)
    raw = site.vms / "demo.raw"
    part = site.sharefs / "iso_files" / "demo-rancher.img.gz.part"
    process = site.start(raw)
    assert wait_for(lambda: part.exists() and part.stat().st_size > 8 * 1024 ** 2)
    process.kill()
    process.wait()
    resumed_from = part.stat().st_size
    assert not raw.exists()

    result = site.provision(raw)
    assert result.returncode == 0, result.stderr.decode()
    summary = summary_of(result)
    # The rerun downloaded only what was missing after the resume point.
    assert summary["bytes_downloaded"] <= int(os.stat(image["dir"] / "demo-rancher.img.gz").st_size) - resumed_from
    assert site.leftovers() == []


def test_kill_during_inflation_then_rerun_reuses_download(image, server, tmp_path):
    site = Site(tmp_path, image, server)
    first = site.provision(site.vms / "first.raw", vm_id=1, name="first")
    assert first.returncode == 0, first.stderr.decode()

    raw = site.vms / "demo.raw"
    process = site.start(raw, vm_id=2)
    assert wait_for(lambda: any(path.stat().st_size > 0 for path in site.vms.glob(".demo.raw.imgtool-*.tmp")))
    process.kill()
    process.wait()
    assert not raw.exists()
    assert len(site.leftovers()) == 1

    result = site.provision(raw, vm_id=2)
    assert result.returncode == 0, result.stderr.decode()
    summary = summary_of(result)
    assert summary["image_reused"] is True
    assert summary["bytes_downloaded"] == 0
    assert site.leftovers() == []


def test_interrupt_leaves_nothing(image, slow_server, tmp_path):
    site = Site(tmp_path, image, slow_server)
    raw = site.vms / "demo.raw"
    process = site.start(raw)
    assert wait_for(lambda: any(site.vms.glob(".demo.raw.imgtool-*.tmp")))
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    assert not raw.exists()
    assert site.leftovers() == []


def test_checksum_mismatch_publishes_nothing(image, server, tmp_path):
    wrong = image["dir"] / "WRONGSUMS"
    wrong.write_text("%s  demo-rancher.img.gz\n" % ("0" * 64))
    site = Site(tmp_path, image, server, checksum_name="WRONGSUMS")
    raw = site.vms / "demo.raw"
    result = site.provision(raw)
    assert result.returncode == 2
    assert b"SHA-256" in result.stderr or b"checksum" in result.stderr
    assert not raw.exists()
    assert site.leftovers() == []
    assert not (site.sharefs / "iso_files" / "demo-rancher.img.gz").exists()


def test_progress_never_goes_back_when_the_download_restarts(image, tmp_path):
    # The restart sends the download back to byte 0 and the inflation with it; the job's
    # percent must still only grow, within 0...100.
    restarting = RestartingServer(image["dir"])
    try:
        site = Site(tmp_path, image, restarting)
        result = site.provision(site.vms / "demo.raw")
    finally:
        restarting.stop()
    assert result.returncode == 0, result.stderr.decode()
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    percents = [line["percent"] for line in lines if "percent" in line]
    assert all(0 <= percent <= 100 for percent in percents)
    assert all(later >= earlier for earlier, later in zip(percents, percents[1:])), percents


def test_raw_appearing_during_job_is_kept_without_configuration(image, slow_server, tmp_path):
    # Another process creates the RAW path while the image downloads: the job must fail
    # at publication without replacing it, and must not leave a configuration whose
    # device.map names a disk this job did not create.
    site = Site(tmp_path, image, slow_server)
    raw = site.vms / "demo.raw"
    process = site.start(raw)
    assert wait_for(lambda: any(site.vms.glob(".demo.raw.imgtool-*.tmp")))
    raw.write_bytes(b"\xff" * 4096)
    assert process.wait(timeout=600) == 73
    assert raw.read_bytes() == b"\xff" * 4096
    assert not (site.sharefs / "configs" / "1_demo").exists()
    assert site.leftovers() == []


@pytest.fixture
def full_filesystem(tmp_path):
    """A 16 MiB tmpfs of our own, far too small for the image's 300 MB of data."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_full_filesystem_fails_without_inflating_again(image, server, tmp_path, full_filesystem):
    # ENOSPC while writing the disk is not a bad stream: inflating the verified file
    # again would only fill the filesystem a second time.
    site = Site(tmp_path / "site", image, server)
    raw = full_filesystem / "demo.raw"
    result = site.provision(raw)
    assert result.returncode == 1
    assert b"ENOSPC" in result.stderr
    assert b"inflating the verified file again" not in result.stderr
    assert not raw.exists()
    assert list(full_filesystem.iterdir()) == []


def test_full_filesystem_stops_the_download(image, slow_server, tmp_path, full_filesystem):
    # The disk cannot be written, so the job fails at once instead of after the whole
    # download; the partial download stays for the rerun.
    site = Site(tmp_path / "site", image, slow_server)
    raw = full_filesystem / "demo.raw"
    result = site.provision(raw)
    assert result.returncode == 1
    assert b"ENOSPC" in result.stderr
    assert not raw.exists()
    iso_files = site.sharefs / "iso_files"
    assert not (iso_files / "demo-rancher.img.gz").exists()
    assert (iso_files / "demo-rancher.img.gz.part").exists()
    assert site.leftovers() == []


def test_raw_in_missing_directory_is_refused_before_work(image, server, tmp_path):
    site = Site(tmp_path, image, server)
    result = site.provision(site.vms / "missing" / "demo.raw")
    assert result.returncode == 1
    assert b"No such file or directory" in result.stderr
    # Refused before any work: no sharefs was activated, nothing was downloaded.
    assert not site.sharefs.exists()


def test_size_zero_is_refused_before_work(image, server, tmp_path):
    site = Site(tmp_path, image, server)
    result = site.provision(site.vms / "demo.raw", size="0")
    assert result.returncode == 64
    assert b"'0'" in result.stderr
    assert not site.sharefs.exists()


def test_invalid_vm_name_is_refused_before_work(image, server, tmp_path):
    site = Site(tmp_path, image, server)
    result = site.provision(site.vms / "demo.raw", name="a/b")
    assert result.returncode == 64
    assert b"'a/b'" in result.stderr
    assert not site.sharefs.exists()


def test_oversized_disk_refused_before_work(image, server, tmp_path):
    # 8000 TiB passes the size parser, but ext4 caps a file at 16 TiB (EFBIG).
    site = Site(tmp_path, image, server)
    raw = site.vms / "demo.raw"
    with open(tmp_path / "probe", "wb") as probe:
        try:
            probe.truncate(8000 * 1024 ** 4)
            pytest.skip("this filesystem takes an 8000 TiB sparse file")
        except OSError:
            pass
    result = site.provision(raw, size="8000T")
    assert result.returncode == 1
    assert b"EFBIG" in result.stderr
    assert not site.sharefs.exists()
    assert site.leftovers() == []
