import pytest

import fleet_protocol as fp


def test_topic_round_trip():
    name = fp.topic("dev-1", fp.Channel.CMD_ACK)
    assert name == "fleet/v1/dev-1/cmd/ack"
    assert fp.parse_topic(name) == ("dev-1", fp.Channel.CMD_ACK)


@pytest.mark.parametrize("device_id", ["", "a/b", "+", "#", "$SYS", "x" * 65, "dev 1"])
def test_device_ids_that_would_break_topics_are_refused(device_id):
    assert not fp.is_valid_device_id(device_id)
    with pytest.raises(ValueError):
        fp.topic(device_id, fp.Channel.STATUS)


@pytest.mark.parametrize(
    "name", ["other/v1/d/status", "fleet/v1/d", "fleet/v1/d/unknown", "fleet/v1/a+b/status", "fleet/v2/d/status"]
)
def test_parse_topic_refuses_foreign_topics(name):
    with pytest.raises(fp.ProtocolError):
        fp.parse_topic(name)


def test_subscriptions():
    assert fp.subscription(fp.Channel.TELEMETRY) == "fleet/v1/+/telemetry"
    assert fp.subscription(fp.Channel.STATUS, "ingest") == "$share/ingest/fleet/v1/+/status"
    assert fp.device_subscription("d1") == "fleet/v1/d1/#"
