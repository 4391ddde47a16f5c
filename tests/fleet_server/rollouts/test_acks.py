"""Device acks (through the real ingest function) show up as each target's state, progress and reason."""

from datetime import UTC, datetime

import fleet_protocol as fp
from fleet_server.devices.services import DeviceMessage, ingest_device_messages
from fleet_server.rollouts import services

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _ack(target, state, **fields) -> DeviceMessage:
    body = fp.CommandAckBody(command_id=str(target.command_id), state=state, **fields)
    return DeviceMessage(target.device_id, fp.envelope(body), NOW)


def test_acks_move_targets_and_the_deployments_summary(package, boxes):
    # given
    deployment = services.deploy(package, [device for device, _ in boxes])
    a, b = deployment.targets.order_by("device__name")

    # when: box-a downloads, box-b fails verification
    ingest_device_messages([_ack(a, fp.AckState.RECEIVED), _ack(b, fp.AckState.RECEIVED)])
    ingest_device_messages([_ack(a, fp.AckState.DOWNLOADING, progress=40.0)])
    ingest_device_messages([_ack(b, fp.AckState.FAILED, reason="signature does not verify with key 0123")])

    # then
    a.refresh_from_db()
    b.refresh_from_db()
    a.command.refresh_from_db()
    b.command.refresh_from_db()
    assert (a.state, a.progress, a.reason) == ("downloading", 40.0, "")
    assert (b.state, b.reason) == ("failed", "signature does not verify with key 0123")
    summary = deployment.summary()
    assert summary["states"] == {"downloading": 1, "failed": 1}
    assert (summary["final"], summary["failed"], summary["percent_done"], summary["is_final"]) == (1, 1, 50.0, False)

    # when: box-a finishes
    ingest_device_messages([_ack(a, fp.AckState.HEALTHY)])

    # then
    summary = deployment.summary()
    assert (summary["succeeded"], summary["failed"], summary["percent_done"], summary["is_final"]) == (
        1,
        1,
        100.0,
        True,
    )


def test_an_ack_from_another_device_changes_nothing(package, boxes):
    deployment = services.deploy(package, [boxes[0][0]])
    target = deployment.targets.get()
    forged = DeviceMessage(
        boxes[1][0].pk, fp.envelope(fp.CommandAckBody(command_id=str(target.command_id), state="failed")), NOW
    )
    ingest_device_messages([forged])
    target.command.refresh_from_db()
    assert target.state == "queued"
