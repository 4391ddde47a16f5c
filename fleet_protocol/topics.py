"""MQTT topic names: one root per device, one sub-topic per channel (docs/protocol.md).

Only MQTT 3.1.1 features are used, so any broker works; shared subscriptions (``$share/...``)
are understood by Mosquitto 2, EMQX and VerneMQ.
"""

import re
from enum import StrEnum

TOPIC_ROOT = "fleet/v1"

# Device ids become topic levels, so they must never contain '/', '+', '#' or '$'.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Channel(StrEnum):
    STATUS = "status"  # dev -> platform, QoS 1, retained; also the Last Will
    TELEMETRY = "telemetry"  # dev -> platform, QoS 0
    EVENTS = "events"  # dev -> platform, QoS 1
    CMD = "cmd"  # platform -> dev, QoS 1
    CMD_ACK = "cmd/ack"  # dev -> platform, QoS 1
    BLOB_REQ = "blob/req"  # dev -> platform, QoS 1
    BLOB = "blob"  # platform -> dev, QoS 1


def is_valid_device_id(device_id: str) -> bool:
    return isinstance(device_id, str) and bool(_DEVICE_ID.match(device_id))


def topic(device_id: str, channel: Channel) -> str:
    if not is_valid_device_id(device_id):
        raise ValueError(f"invalid device id {device_id!r}: use 1-64 letters, digits, '-' or '_'")
    return f"{TOPIC_ROOT}/{device_id}/{Channel(channel).value}"


def parse_topic(name: str) -> tuple[str, Channel]:
    """Split ``fleet/v1/{device_id}/{channel}`` into its device id and channel."""
    from fleet_protocol.codec import ProtocolError

    prefix = TOPIC_ROOT + "/"
    if not name.startswith(prefix):
        raise ProtocolError(f"topic {name!r} is outside {TOPIC_ROOT}/")
    device_id, _, rest = name[len(prefix) :].partition("/")
    if not is_valid_device_id(device_id):
        raise ProtocolError(f"topic {name!r} has an invalid device id")
    try:
        return device_id, Channel(rest)
    except ValueError:
        raise ProtocolError(f"topic {name!r} names an unknown channel {rest!r}") from None


def subscription(channel: Channel, share_group: str | None = None) -> str:
    """The platform's subscription to one channel of every device, shared when a group is given."""
    pattern = f"{TOPIC_ROOT}/+/{Channel(channel).value}"
    return f"$share/{share_group}/{pattern}" if share_group else pattern


def device_subscription(device_id: str) -> str:
    """Everything under one device's root: what its broker ACL allows and nothing more."""
    if not is_valid_device_id(device_id):
        raise ValueError(f"invalid device id {device_id!r}")
    return f"{TOPIC_ROOT}/{device_id}/#"
