"""Codec throughput: how many messages per second fleet_protocol encodes, and decodes with validation.

Every MQTT message the platform ingests goes through ``fleet_protocol.decode_for_channel`` first,
so the codec bounds what one ingest core can take before the database is even involved; and a
broken or hostile device must be refused at least as fast as a good one is accepted.

The baseline is the obvious alternative: the stdlib ``json`` module decoding into dicts, followed
by hand-written validation of exactly the same rules (required fields, types, ranges such as
0 <= cpu_percent <= 100, identifier patterns, list and map bounds, unknown fields rejected at
every level, the size limit, the channel check). Before timing anything, both are run on every
payload and must agree on which ones are valid, so the baseline does no less work than the codec.
The baseline returns plain dicts while the codec builds typed structs, which favours the baseline.
Encoding compares ``fleet_protocol.encode`` of a message with ``json.dumps`` of the same message
as a dict, both producing compact UTF-8 bytes.
"""

import json
import math
import random
import re
import time

import msgspec

import fleet_protocol as fp
from benchmarks.harness import TIMES, Comparison, Options, Result, Table, Workload, compare, measure_rates

DISTINCT_MESSAGES = 1000  # distinct payloads per workload, so no branch or cache sees one message only


# --- realistic messages --------------------------------------------------------------------------


def telemetry_message(rng: random.Random) -> fp.TelemetryMessage:
    """A smart box with 2-4 cameras and two inference runtimes, as the agent reports every 10 s."""
    cameras = [
        fp.CameraTelemetry(camera=f"cam-{i}", fps=round(rng.uniform(12, 30), 2), dropped_frames=rng.randrange(0, 40))
        for i in range(rng.randint(2, 4))
    ]
    runtimes = [
        fp.RuntimeTelemetry(
            runtime=name, latency_p50_ms=round(rng.uniform(5, 40), 2), latency_p95_ms=round(rng.uniform(40, 90), 2)
        )
        for name in ("fpga-dpu", "cpu-onnx")
    ]
    body = fp.TelemetryBody(
        cpu_percent=round(rng.uniform(0, 100), 1),
        memory_percent=round(rng.uniform(20, 90), 1),
        memory_used_mb=round(rng.uniform(300, 1800), 1),
        load_1m=round(rng.uniform(0, 4), 2),
        temperature_c=round(rng.uniform(35, 85), 1),
        disk_free_mb=round(rng.uniform(500, 30000), 1),
        uptime_s=float(rng.randrange(60, 10**7)),
        cameras=cameras,
        runtimes=runtimes,
        queues={"frames": rng.randrange(0, 8), "events": rng.randrange(0, 50), "uploads": rng.randrange(0, 5)},
    )
    return fp.envelope(body)


def status_message(rng: random.Random) -> fp.StatusMessage:
    """The retained 'online' status an agent publishes after every (re)connect."""
    version = rng.randrange(1, 50)
    body = fp.StatusBody(
        state="online",
        agent_version=f"1.{rng.randrange(0, 9)}.{rng.randrange(0, 20)}",
        kind=rng.choice(["smart_box_fpga", "smart_box_cpu", "integrated_camera"]),
        runtimes=["fpga-dpu", "cpu-onnx"],
        models=[
            fp.ModelSlot(slot="a", model="parking-yolo", version=version, active=True),
            fp.ModelSlot(slot="b", model="parking-yolo", version=version - 1),
        ],
        hardware=fp.HardwareInfo(
            cpu_model="ARM Cortex-A53",
            cpu_count=4,
            memory_total_mb=2048,
            os="Linux 5.15.36-xilinx",
            arch="aarch64",
            accelerators=["zynqmp-dpu"],
        ),
        keepalive_s=30,
        telemetry_interval_s=10.0,
    )
    return fp.envelope(body)


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _body_changed(d: dict, **changes) -> dict:
    return {**d, "body": {**d["body"], **changes}}


def _last_camera_broken(d: dict) -> dict:
    cameras = [dict(c) for c in d["body"]["cameras"]]
    cameras[-1]["fps"] = -1.0
    return _body_changed(d, cameras=cameras)


def _without_memory_percent(d: dict) -> dict:
    body = dict(d["body"])
    del body["memory_percent"]
    return {**d, "body": body}


# The ways a broken or hostile device gets a telemetry message wrong: each turns a valid message
# (as a dict) into a payload that must be refused.
INVALID_KINDS = {
    "not JSON": lambda d, rng: b"\x00\xff not json at all",
    "truncated": lambda d, rng: _dumps(d)[: len(_dumps(d)) // 2],
    "unknown protocol version": lambda d, rng: _dumps({**d, "v": 2}),
    "bad message id": lambda d, rng: _dumps({**d, "id": "../../etc/passwd"}),
    "cpu_percent out of range": lambda d, rng: _dumps(_body_changed(d, cpu_percent=150.0)),
    "cpu_percent a string": lambda d, rng: _dumps(_body_changed(d, cpu_percent="12.5")),
    "unknown field": lambda d, rng: _dumps(_body_changed(d, gpu_percent=3.0)),
    "missing field": lambda d, rng: _dumps(_without_memory_percent(d)),
    "last camera invalid": lambda d, rng: _dumps(_last_camera_broken(d)),  # the error sits at the very end
    "status on the telemetry channel": lambda d, rng: _dumps(msgspec.to_builtins(status_message(rng))),
    "over the size limit": lambda d, rng: b"[" * 10 + b" " * (fp.MAX_MESSAGE_BYTES + 1),
}


def invalid_payloads(rng: random.Random, count: int) -> list[bytes]:
    """``count`` invalid telemetry payloads, every kind in turn, each from a different valid message."""
    payloads = []
    while len(payloads) < count:
        base = msgspec.to_builtins(telemetry_message(rng))
        payloads.extend(kind(base, rng) for kind in INVALID_KINDS.values())
    return payloads[:count]


# --- the baseline: stdlib json plus the same rules by hand ---------------------------------------


class Invalid(ValueError):
    pass


_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.:-]+$")  # the pattern fleet_protocol.messages uses
_BIG = 1e12
_NO_LIMIT = math.inf  # msgspec, like json, takes integers of any size where no bound is set


def _object(value, required: frozenset, allowed: frozenset, where: str) -> dict:
    if type(value) is not dict:
        raise Invalid(f"{where}: expected an object")
    keys = value.keys()
    if not keys <= allowed:
        raise Invalid(f"{where}: unknown field {sorted(keys - allowed)[0]!r}")
    if not required <= keys:
        raise Invalid(f"{where}: missing field {sorted(required - keys)[0]!r}")
    return value


def _number(value, low: float, high: float, where: str) -> None:
    # type() rather than isinstance(): a JSON true must not pass as the number 1.
    if type(value) is not float and type(value) is not int:
        raise Invalid(f"{where}: expected a number")
    if not low <= value <= high:
        raise Invalid(f"{where}: out of range")


def _integer(value, low: float, high: float, where: str) -> None:
    if type(value) is not int:
        raise Invalid(f"{where}: expected an integer")
    if not low <= value <= high:
        raise Invalid(f"{where}: out of range")


def _text(value, max_length: int, where: str) -> None:
    if type(value) is not str or len(value) > max_length:
        raise Invalid(f"{where}: expected a string of at most {max_length} characters")


def _identifier(value, where: str) -> None:
    if type(value) is not str or not 1 <= len(value) <= 64 or not _IDENTIFIER.search(value):
        raise Invalid(f"{where}: expected an identifier")


def _array(value, max_length: int, where: str) -> list:
    if type(value) is not list or len(value) > max_length:
        raise Invalid(f"{where}: expected an array of at most {max_length} items")
    return value


_CAMERA = frozenset({"camera", "fps", "dropped_frames"})
_RUNTIME = frozenset({"runtime", "latency_p50_ms", "latency_p95_ms"})
_TELEMETRY_REQUIRED = frozenset({"cpu_percent", "memory_percent"})
_TELEMETRY = _TELEMETRY_REQUIRED | {
    "memory_used_mb",
    "load_1m",
    "temperature_c",
    "disk_free_mb",
    "uptime_s",
    "cameras",
    "runtimes",
    "queues",
}


def _telemetry_body(body) -> None:
    _object(body, _TELEMETRY_REQUIRED, _TELEMETRY, "body")
    _number(body["cpu_percent"], 0, 100, "cpu_percent")
    _number(body["memory_percent"], 0, 100, "memory_percent")
    for name in ("memory_used_mb", "load_1m", "uptime_s"):
        if name in body:
            _number(body[name], 0, _BIG, name)
    if body.get("temperature_c") is not None:
        _number(body["temperature_c"], -100, 250, "temperature_c")
    if body.get("disk_free_mb") is not None:
        _number(body["disk_free_mb"], 0, _BIG, "disk_free_mb")
    if "cameras" in body:
        for camera in _array(body["cameras"], 64, "cameras"):
            _object(camera, frozenset({"camera"}), _CAMERA, "camera")
            _identifier(camera["camera"], "camera.camera")
            if "fps" in camera:
                _number(camera["fps"], 0, _BIG, "camera.fps")
            if "dropped_frames" in camera:
                _integer(camera["dropped_frames"], 0, _NO_LIMIT, "camera.dropped_frames")
    if "runtimes" in body:
        for runtime in _array(body["runtimes"], 16, "runtimes"):
            _object(runtime, frozenset({"runtime"}), _RUNTIME, "runtime")
            _identifier(runtime["runtime"], "runtime.runtime")
            for name in ("latency_p50_ms", "latency_p95_ms"):
                if name in runtime:
                    _number(runtime[name], 0, _BIG, f"runtime.{name}")
    if "queues" in body:
        queues = body["queues"]
        if type(queues) is not dict or len(queues) > 32:
            raise Invalid("queues: expected an object of at most 32 entries")
        for name, depth in queues.items():
            _identifier(name, "queues key")
            _integer(depth, 0, _NO_LIMIT, "queues value")


_MODEL_SLOT = frozenset({"slot", "model", "version", "active"})
_HARDWARE = frozenset({"cpu_model", "cpu_count", "memory_total_mb", "os", "arch", "accelerators"})
_STATUS = frozenset(
    {"state", "agent_version", "kind", "runtimes", "models", "hardware", "keepalive_s", "telemetry_interval_s"}
)


def _status_body(body) -> None:
    _object(body, frozenset({"state"}), _STATUS, "body")
    if body["state"] not in ("online", "offline") or type(body["state"]) is not str:
        raise Invalid("state: expected 'online' or 'offline'")
    for name in ("agent_version", "kind"):
        if name in body:
            _text(body[name], 128, name)
    if "runtimes" in body:
        for runtime in _array(body["runtimes"], 16, "runtimes"):
            _identifier(runtime, "runtimes item")
    if "models" in body:
        for slot in _array(body["models"], 2, "models"):
            _object(slot, frozenset({"slot", "model", "version"}), _MODEL_SLOT, "model slot")
            if slot["slot"] not in ("a", "b") or type(slot["slot"]) is not str:
                raise Invalid("slot: expected 'a' or 'b'")
            _text(slot["model"], 128, "model")
            _integer(slot["version"], 0, _NO_LIMIT, "version")
            if "active" in slot and type(slot["active"]) is not bool:
                raise Invalid("active: expected a boolean")
    hardware = body.get("hardware")
    if hardware is not None:
        _object(hardware, frozenset(), _HARDWARE, "hardware")
        for name in ("cpu_model", "os", "arch"):
            if name in hardware:
                _text(hardware[name], 128, name)
        if "cpu_count" in hardware:
            _integer(hardware["cpu_count"], 0, 4096, "cpu_count")
        if "memory_total_mb" in hardware:
            _number(hardware["memory_total_mb"], 0, _BIG, "memory_total_mb")
        if "accelerators" in hardware:
            for accelerator in _array(hardware["accelerators"], 16, "accelerators"):
                _text(accelerator, 128, "accelerator")
    if "keepalive_s" in body:
        _integer(body["keepalive_s"], 0, 3600, "keepalive_s")
    if "telemetry_interval_s" in body:
        _number(body["telemetry_interval_s"], 0, 86400, "telemetry_interval_s")


_BODY_VALIDATORS = {"telemetry": _telemetry_body, "status": _status_body}
_ENVELOPE = frozenset({"v", "type", "id", "ts", "body"})


def baseline_decode(expected_type: str, data: bytes) -> dict:
    """json.loads plus the rules of fleet_protocol.messages by hand; raises ValueError if invalid."""
    if len(data) > fp.MAX_MESSAGE_BYTES:
        raise Invalid("message too large")
    message = json.loads(data)
    _object(message, _ENVELOPE, _ENVELOPE, "message")
    if type(message["v"]) is not int or message["v"] != 1:
        raise Invalid("v: unsupported protocol version")
    kind = message["type"]
    if type(kind) is not str or kind not in ("telemetry", "status", "cmd", "cmd/ack"):
        raise Invalid("type: unknown message type")
    _identifier(message["id"], "id")
    _number(message["ts"], 0, 1e11, "ts")
    validate_body = _BODY_VALIDATORS.get(kind)
    if validate_body is not None:
        validate_body(message["body"])
    # Like decode_for_channel: the message is validated first, then refused if on the wrong channel
    # (command bodies are never valid on the two channels measured here, so they are not re-implemented).
    if kind != expected_type:
        raise Invalid(f"a {kind} message does not belong on this channel")
    return message


# --- the measurement -----------------------------------------------------------------------------


def _refuses(decode, payload: bytes, error: type[Exception]) -> bool:
    try:
        decode(payload)
    except error:
        return True
    return False


def _check_baseline_is_equivalent(channel: fp.Channel, valid: list[bytes], invalid: list[bytes]) -> None:
    """Both decoders must accept exactly the valid payloads, alike, and refuse all the invalid ones."""
    for payload in valid:
        decoded = fp.decode_for_channel(channel, payload)
        if msgspec.to_builtins(decoded) != baseline_decode(channel.value, payload):
            raise AssertionError(f"codec and baseline decode a valid payload differently: {payload[:120]!r}")
    for payload in invalid:
        codec_refuses = _refuses(lambda p: fp.decode_for_channel(channel, p), payload, fp.ProtocolError)
        if not codec_refuses or not _refuses(lambda p: baseline_decode(channel.value, p), payload, ValueError):
            raise AssertionError(f"an invalid payload was accepted: {payload[:120]!r}")


def _passes_for(run_once, target_s: float) -> int:
    """How many passes over the payloads make a round last about ``target_s``."""
    start = time.perf_counter()
    run_once()
    return max(1, math.ceil(target_s / max(time.perf_counter() - start, 1e-6)))


def _workload(name: str, handle, items: list, target_s: float) -> Workload:
    def one_pass() -> None:
        for item in items:
            handle(item)

    passes = _passes_for(one_pass, target_s)

    def run() -> int:
        for _ in range(passes):
            one_pass()
        return passes * len(items)

    return Workload(name, run)


def _refusing(decoder, error: type[Exception]):
    def handle(payload: bytes) -> None:
        try:
            decoder(payload)
        except error:
            return
        raise AssertionError("an invalid payload was accepted")

    return handle


def run(options: Options) -> Result:
    rng = random.Random(20240601)  # fixed: every run measures the same payloads
    rounds, target_s = (3, 0.05) if options.quick else (7, 0.25)
    telemetry = [telemetry_message(rng) for _ in range(DISTINCT_MESSAGES)]
    statuses = [status_message(rng) for _ in range(DISTINCT_MESSAGES)]
    telemetry_dicts = [msgspec.to_builtins(m) for m in telemetry]
    status_dicts = [msgspec.to_builtins(m) for m in statuses]
    telemetry_bytes = [fp.encode(m) for m in telemetry]
    status_bytes = [fp.encode(m) for m in statuses]
    invalid = invalid_payloads(rng, DISTINCT_MESSAGES)

    _check_baseline_is_equivalent(fp.Channel.TELEMETRY, telemetry_bytes, invalid)
    _check_baseline_is_equivalent(fp.Channel.STATUS, status_bytes, [])

    def on(channel: fp.Channel):
        return lambda payload: fp.decode_for_channel(channel, payload)

    def baseline_on(channel: fp.Channel):
        return lambda payload: baseline_decode(channel.value, payload)

    cases = [
        ("encode telemetry", fp.encode, _dumps, telemetry, telemetry_dicts),
        ("encode status (online)", fp.encode, _dumps, statuses, status_dicts),
        (
            "decode + validate telemetry",
            on(fp.Channel.TELEMETRY),
            baseline_on(fp.Channel.TELEMETRY),
            telemetry_bytes,
            telemetry_bytes,
        ),
        (
            "decode + validate status (online)",
            on(fp.Channel.STATUS),
            baseline_on(fp.Channel.STATUS),
            status_bytes,
            status_bytes,
        ),
        (
            f"refuse invalid telemetry ({len(INVALID_KINDS)} kinds, mixed)",
            _refusing(on(fp.Channel.TELEMETRY), fp.ProtocolError),
            _refusing(baseline_on(fp.Channel.TELEMETRY), ValueError),
            invalid,
            invalid,
        ),
    ]
    workloads = []
    for case, codec, baseline, codec_items, baseline_items in cases:
        workloads += [
            _workload(f"codec: {case}", codec, codec_items, target_s),
            _workload(f"baseline: {case}", baseline, baseline_items, target_s),
        ]
    rates = measure_rates(workloads, rounds)
    rows: list[Comparison] = [compare(case, rates, f"codec: {case}", f"baseline: {case}") for case, *_ in cases]

    valid_decode, refuse = rows[2], rows[4]
    return Result(
        title="codec throughput (fleet_protocol vs stdlib json + hand-written validation)",
        description=__doc__.split("\n\n", 1)[1],
        tables=[
            Table(
                measured_label="fleet_protocol (msgspec)",
                baseline_label="json + hand validation",
                rows=rows,
            )
        ],
        notes=[
            f"Payloads: telemetry {_mean_size(telemetry_bytes):.0f} B, status {_mean_size(status_bytes):.0f} B "
            f"on average; {DISTINCT_MESSAGES} distinct payloads per case, median of {rounds} rounds.",
            f"Invalid telemetry is refused at {refuse.measured / valid_decode.measured:.2f}{TIMES} the rate valid "
            "telemetry is accepted (the refusals include a payload over the 256 KiB limit, "
            "turned away before parsing).",
            f"One core decodes and validates about {valid_decode.measured:,.0f} telemetry messages per second: "
            f"the codec takes {1e6 / valid_decode.measured:.1f} µs of each message's ingest time.",
        ],
        details={
            "rounds": rounds,
            "distinct_payloads": DISTINCT_MESSAGES,
            "round_target_s": target_s,
            "payload_bytes_mean": {"telemetry": _mean_size(telemetry_bytes), "status": _mean_size(status_bytes)},
            "invalid_kinds": list(INVALID_KINDS),
            "msgspec": msgspec.__version__,
        },
    )


def _mean_size(payloads: list[bytes]) -> float:
    return sum(map(len, payloads)) / len(payloads)
