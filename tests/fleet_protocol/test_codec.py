import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fleet_protocol as fp


def _telemetry(**overrides) -> fp.TelemetryMessage:
    body = {"cpu_percent": 12.5, "memory_percent": 40.0, "temperature_c": 51.0, **overrides}
    return fp.envelope(fp.TelemetryBody(**body))


def test_every_message_type_round_trips():
    messages = [
        fp.envelope(fp.StatusBody(state="online", agent_version="1.0", runtimes=["cpu-int8"])),
        _telemetry(cameras=[fp.CameraTelemetry(camera="gate", fps=12.0)]),
        fp.envelope(fp.PingCommand(command_id="c1")),
        fp.envelope(fp.SetTelemetryIntervalCommand(command_id="c2", interval_s=30)),
        fp.envelope(fp.CommandAckBody(command_id="c1", state=fp.AckState.DONE, reason="pong")),
    ]
    for message in messages:
        assert fp.decode(fp.encode(message)) == message


def test_envelope_has_version_type_id_and_time():
    raw = json.loads(fp.encode(_telemetry()))
    assert raw["v"] == fp.PROTOCOL_VERSION
    assert raw["type"] == "telemetry"
    assert len(raw["id"]) == 32
    assert raw["ts"] > 1.7e9


def _raw(**envelope) -> bytes:
    base = {"v": 1, "type": "telemetry", "id": "m1", "ts": 1.8e9, "body": {"cpu_percent": 1, "memory_percent": 2}}
    base.update(envelope)
    return json.dumps(base).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_raw(v=2), "$.v"),
        (_raw(type="reboot"), "reboot"),
        (_raw(body={"cpu_percent": 101, "memory_percent": 2}), "$.body.cpu_percent"),
        (_raw(body={"cpu_percent": 1}), "memory_percent"),
        (_raw(body={"cpu_percent": 1, "memory_percent": 2, "gpu": 3}), "gpu"),
        (_raw(id="a/b"), "$.id"),
        (_raw(ts=-1), "$.ts"),
        (b"not json", "malformed"),
        (b"", "truncated"),
        (b"[" * 10_000, ""),
    ],
)
def test_invalid_messages_are_refused_with_a_reason(payload, reason):
    with pytest.raises(fp.ProtocolError) as error:
        fp.decode(payload)
    assert reason in error.value.reason


def test_oversized_messages_are_refused_before_parsing():
    with pytest.raises(fp.ProtocolError, match="exceeds the limit"):
        fp.decode(b" " * (fp.MAX_MESSAGE_BYTES + 1))


def test_a_message_on_the_wrong_channel_is_refused():
    with pytest.raises(fp.ProtocolError, match="does not belong on channel status"):
        fp.decode_for_channel(fp.Channel.STATUS, fp.encode(_telemetry()))


def test_unknown_command_can_still_be_answered_by_id():
    payload = json.dumps(
        {"v": 1, "type": "cmd", "id": "m", "ts": 1.8e9, "body": {"name": "self_destruct", "command_id": "c9"}}
    ).encode()
    with pytest.raises(fp.ProtocolError):
        fp.decode_for_channel(fp.Channel.CMD, payload)
    assert fp.peek_command_id(payload) == "c9"
    assert fp.peek_command_id(b"garbage") is None


# --- property-based: the codec never raises anything but ProtocolError ------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _decode_or_refuse(payload) -> None:
    try:
        fp.decode(payload)
    except fp.ProtocolError as exc:
        assert exc.reason


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_codec(payload):
    _decode_or_refuse(payload)
    assert fp.peek_command_id(payload) is None or isinstance(fp.peek_command_id(payload), str)


@settings(max_examples=400)
@given(json_values)
def test_random_json_never_crashes_the_codec(value):
    _decode_or_refuse(json.dumps(value).encode())


@settings(max_examples=400)
@given(
    st.sampled_from(["status", "telemetry", "cmd", "cmd/ack", "events", ""]),
    st.one_of(st.integers(-2, 3), st.text(max_size=3), st.none()),
    st.dictionaries(st.sampled_from(["state", "cpu_percent", "memory_percent", "name", "command_id"]), json_values),
)
def test_near_valid_envelopes_never_crash_the_codec(kind, version, body):
    payload = json.dumps({"v": version, "type": kind, "id": "x", "ts": 1.8e9, "body": body}).encode()
    _decode_or_refuse(payload)


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 400))
def test_corrupted_valid_messages_never_crash_the_codec(noise, position):
    valid = bytearray(fp.encode(_telemetry()))
    position %= len(valid)
    valid[position : position + len(noise)] = noise
    _decode_or_refuse(bytes(valid))


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"NaN", b"Infinity", b"1" * 400])
def test_out_of_range_numbers_are_refused(number):
    # A message that decodes is one the receiver can act on: no NaN or infinities sneak through.
    payload = _raw().replace(b'"cpu_percent": 1', b'"cpu_percent": ' + number)
    assert payload != _raw()
    with pytest.raises(fp.ProtocolError):
        fp.decode(payload)


# --- deploy, blob requests, events and chunks (issue 6) ---------------------------------------

_SHA = "ab" * 32


def test_update_messages_round_trip():
    messages = [
        fp.envelope(
            fp.DeployCommand(
                command_id="d1",
                model="detector",
                version=3,
                blob_sha256=_SHA,
                blob_size=5_000_000,
                chunk_size=64 * 1024,
                wrapped_key="a2V5",
                scene_configs=[{"camera": "gate", "width": 320, "height": 240, "zones": [], "lines": []}],
                observe_s=30,
            )
        ),
        fp.envelope(fp.RollbackCommand(command_id="r1", reason="operator asked")),
        fp.envelope(fp.SceneConfigCommand(command_id="s1", version=2, scene_configs=[{"camera": "gate"}])),
        fp.envelope(fp.BlobRequestBody(command_id="d1", blob_sha256=_SHA, chunks=[0, 1, 2])),
        fp.envelope(
            fp.EventBody(
                event_id="0b5c4f5e-8f0a-4a57-9a43-2a1f8c3e9d10",
                seq=7,
                rule="occupancy",
                camera="gate",
                zone="P1",
                start=1.8e9,
                attributes={"state": "occupied", "track_id": 4},
            )
        ),
    ]
    for message in messages:
        assert fp.decode(fp.encode(message)) == message


def test_blob_requests_are_bounded_and_only_on_their_channel():
    too_many = fp.envelope(fp.BlobRequestBody(command_id="d1", blob_sha256=_SHA, chunks=[0]))
    raw = json.loads(fp.encode(too_many))
    raw["body"]["chunks"] = list(range(fp.MAX_WINDOW + 1))
    with pytest.raises(fp.ProtocolError, match="length"):
        fp.decode(json.dumps(raw).encode())
    with pytest.raises(fp.ProtocolError, match="does not belong"):
        fp.decode_for_channel(fp.Channel.EVENTS, fp.encode(too_many))


def test_deploy_refuses_a_bad_digest_and_oversized_chunks():
    base = {"command_id": "d1", "model": "m", "version": 1, "blob_size": 10, "wrapped_key": "k"}
    message = fp.envelope(fp.DeployCommand(**base, blob_sha256=_SHA, chunk_size=1024))
    for field, value in [("chunk_size", fp.MAX_CHUNK_BYTES + 1), ("blob_sha256", "XYZ"), ("version", 0)]:
        raw = json.loads(fp.encode(message))
        raw["body"][field] = value
        with pytest.raises(fp.ProtocolError, match=field):
            fp.decode_for_channel(fp.Channel.CMD, json.dumps(raw).encode())


def test_chunk_round_trip_and_header_checks():
    chunk = fp.Chunk(blob_sha256=_SHA, index=2, count=5, data=b"x" * 1000)
    payload = fp.encode_chunk(chunk)
    assert len(payload) == fp.CHUNK_HEADER_BYTES + 1000
    assert fp.decode_chunk(payload) == chunk
    tampered = payload[:-1] + b"y"
    with pytest.raises(fp.ProtocolError, match="sha256"):
        fp.decode_chunk(tampered)
    with pytest.raises(fp.ProtocolError, match="magic"):
        fp.decode_chunk(b"NOPE" + payload[4:])
    with pytest.raises(fp.ProtocolError, match="shorter"):
        fp.decode_chunk(payload[:10])
    with pytest.raises(fp.ProtocolError, match="exceeds"):
        fp.decode_chunk(payload + b"\0" * fp.MAX_CHUNK_BYTES)
    assert fp.chunk_count(5_000_000, 65536) == 77


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_decode_chunk_never_raises_anything_but_protocol_error(data):
    with contextlib.suppress(fp.ProtocolError):
        fp.decode_chunk(data)
