"""`manage.py deploy`: by device id or name, refusals, and --wait following acks to the end."""

import io
import threading
import time
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

import fleet_protocol as fp
from fleet_server.devices.models import Command
from fleet_server.devices.services import DeviceMessage, ingest_device_messages
from fleet_server.rollouts.models import Deployment
from tests.fleet_server.rollouts.conftest import keyed_device


def test_deploy_by_name_and_id_prints_the_commands(package, boxes):
    box_a, box_b = (device for device, _ in boxes)
    out = io.StringIO()

    call_command("deploy", str(package.pk), "box-a", box_b.pk, "--observe-s", "15", stdout=out)

    deployment = Deployment.objects.get()
    assert {t.device for t in deployment.targets.all()} == {box_a, box_b}
    assert deployment.observe_s == 15
    for target in deployment.targets.all():
        assert str(target.command_id) in out.getvalue()


def test_refusals_send_nothing(package, boxes, other_site):
    rival, _ = keyed_device(other_site, "rival-box")
    with pytest.raises(CommandError, match="no package 999999"):
        call_command("deploy", "999999", "box-a")
    with pytest.raises(CommandError, match="no device 'nobody'"):
        call_command("deploy", str(package.pk), "nobody")
    with pytest.raises(CommandError, match=r"nothing was sent: .*another tenant"):
        call_command("deploy", str(package.pk), "box-a", rival.pk)
    assert not Command.objects.exists()


def _ack_when_sent(device_states: dict, errors: list) -> None:
    """Play the devices: wait for the deploy commands, then ack them with the given final states."""
    try:
        deadline = time.monotonic() + 15
        while Command.objects.filter(name="deploy").count() < len(device_states):
            if time.monotonic() > deadline:
                raise AssertionError("the deploy commands never appeared")
            time.sleep(0.05)
        now = datetime.now(UTC)
        for command in Command.objects.filter(name="deploy"):
            for state, progress in (("downloading", 50.0), (device_states[command.device.name], None)):
                body = fp.CommandAckBody(command_id=str(command.pk), state=state, progress=progress)
                ingest_device_messages([DeviceMessage(command.device_id, fp.envelope(body), now)])
    except Exception as exc:  # reported to the test's thread
        errors.append(exc)
    finally:
        connection.close()


@pytest.mark.parametrize(("final_b", "succeeds"), [("healthy", True), ("failed", False)])
def test_wait_follows_every_device_to_a_final_state(transactional_db, package, boxes, final_b, succeeds):
    errors: list = []
    devices = threading.Thread(target=_ack_when_sent, args=({"box-a": "healthy", "box-b": final_b}, errors))
    devices.start()
    out = io.StringIO()
    try:
        if succeeds:
            call_command("deploy", str(package.pk), "box-a", "box-b", "--wait", "--interval", "0.05", stdout=out)
        else:
            with pytest.raises(CommandError, match="1 of 2 devices did not install the package"):
                call_command("deploy", str(package.pk), "box-a", "box-b", "--wait", "--interval", "0.05", stdout=out)
    finally:
        devices.join()
    assert not errors
    lines = out.getvalue().splitlines()
    assert "box-a: healthy" in lines and f"box-b: {final_b}" in lines
    assert ("all 2 devices run" in out.getvalue()) == succeeds
