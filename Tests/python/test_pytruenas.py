"""pytruenas, a real middleware client from PyPI, over ws+unix:// against the server."""

import os

import pytest
from pytruenas import TrueNASClient
from pytruenas.connection import TrueNASWSConnection
from pytruenas.exceptions import ValidationErrors


def test_ping_and_job_wait(server):
    client = TrueNASClient("ws+unix://" + server.socket_path)
    assert client.api.core.ping() == "pong"
    assert client.api.test.sleep(0.1, job=True) == "slept"


def test_subscription_sees_every_state(server):
    connection = TrueNASWSConnection("ws+unix://" + server.socket_path)
    connection.connect()
    try:
        subscription = connection.subscribe("core.get_jobs")
        job_id = connection.call("test.sleep", 0.2)
        states = []
        for event in subscription.events(timeout=10):
            if event.id != job_id:
                continue
            states.append(event.fields["state"])
            if states[-1] == "SUCCESS":
                break
        assert states[0] == "WAITING"
        assert "RUNNING" in states
        assert states[-1] == "SUCCESS"
    finally:
        connection.close()


def test_validation_error_reaches_client(server):
    client = TrueNASClient("ws+unix://" + server.socket_path)
    with pytest.raises(ValidationErrors) as raised:
        client.api.vm.raw_resize("/etc/passwd", "1")
    attribute, message, errno = raised.value.errors[0]
    assert attribute == "path"
    assert "outside the pools root" in message
    assert errno == 22


def test_step_by_step_flow(server):
    os.makedirs(os.path.join(server.pools_root, "tank"))
    client = TrueNASClient("ws+unix://" + server.socket_path)
    assert client.api.vm.activate_sharefs("tank") is True
    sharefs = client.api.vm.get_sharefs()
    assert sharefs.endswith("/tank/.bhyve_containers")
