"""Ingest throughput: telemetry messages per second one ingest worker process writes to PostgreSQL.

The MQTT ingest applies device messages through ``ingest_device_messages`` in batches of up to
500, one transaction per batch; this measures that against the obvious alternative, the same
messages applied one per call (one transaction, one commit per message). Both run in this process
against the real PostgreSQL, on a fleet of 1,000 registered devices that are already online (the
steady state), with a realistic mix of 95 % telemetry and 5 % 'online' status messages; the
telemetry table is emptied before every round. The measured rate sets how many devices one ingest
process keeps up with, and so how many the design target of 100,000 devices needs.

A second table measures the whole path: telemetry published (QoS 0, as agents do) to the local
Mosquitto, received by ``MqttIngest`` (shared subscription, batches of 500, 0.25 s flush) running
in a thread of this process, decoded and written; timed from the first publish until the last
message is committed, and compared with the direct batched rate measured in the same run.

Runs against a dedicated database (``BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/fleet_bench``, created and migrated when missing; its tables
are emptied) and the broker at ``BENCH_MQTT_URL`` (default ``mqtt://127.0.0.1:1883``).
"""

import base64
import contextlib
import math
import os
import random
import secrets
import statistics
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit

from benchmarks.harness import REPO_ROOT, Options, Result, Table, Workload, compare, measure_rates
from benchmarks.protocol import status_message, telemetry_message

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fleet_bench")
MQTT_URL = os.environ.get("BENCH_MQTT_URL", "mqtt://127.0.0.1:1883")
DEVICES = 1000
BATCH = 500  # the ingest's default batch (settings.MQTT_INGEST_BATCH)
STATUS_SHARE = 0.05
TELEMETRY_INTERVAL_S = 10  # the agents' default (settings.AGENT_TELEMETRY_INTERVAL_S)
TARGET_DEVICES = 100_000


# --- Django against the benchmark database -------------------------------------------------------


def _database_name() -> str:
    return urlsplit(DATABASE_URL).path.lstrip("/")


def _create_database_if_missing() -> None:
    import psycopg
    from psycopg import sql

    name = _database_name()
    maintenance = urlsplit(DATABASE_URL)._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def setup_django() -> None:
    """Point the platform's own settings at the benchmark database and broker, as production runs it."""
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ["MQTT_URL"] = MQTT_URL
    os.environ["DJANGO_SETTINGS_MODULE"] = "fleet_server.settings"
    # DEBUG=1 would make Django keep every query it runs, a cost no production ingest pays.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("ALLOWED_HOSTS", "localhost")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    for path in (str(REPO_ROOT), str(REPO_ROOT / "platform")):
        if path not in sys.path:
            sys.path.insert(0, path)
    _create_database_if_missing()

    import django
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    # The benchmark empties tables: never let it run anywhere but its own database.
    if connection.settings_dict["NAME"] != _database_name():
        raise RuntimeError(f"Django is configured for {connection.settings_dict['NAME']!r}, not the benchmark database")
    call_command("migrate", verbosity=0, interactive=False)


def _postgres_settings() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
        settings = {"server_version": version}
        for name in ("fsync", "synchronous_commit", "shared_buffers"):
            cursor.execute(f"SHOW {name}")
            settings[name] = cursor.fetchone()[0]
    return settings


# --- the fleet and its messages ------------------------------------------------------------------


def create_fleet(count: int) -> list[str]:
    """A tenant, a site and ``count`` online devices, replacing whatever the database held."""
    from django.db import connection
    from django.utils import timezone

    from fleet_server.devices.models import Device, DeviceKind, Site
    from fleet_server.devices.services import mosquitto_password_hash
    from fleet_server.tenants.models import Tenant

    with connection.cursor() as cursor:
        # CASCADE reaches sites, devices, their telemetry, commands and claim tokens.
        cursor.execute(f"TRUNCATE {Tenant._meta.db_table} RESTART IDENTITY CASCADE")
    tenant = Tenant.objects.create(name="Benchmark", slug="benchmark")
    site = Site.objects.create(tenant=tenant, name="Benchmark park", slug="benchmark-park")
    password_hash = mosquitto_password_hash(secrets.token_urlsafe(32))  # one is enough: nobody logs in
    now = timezone.now()
    devices = []
    for i in range(count):
        device_id = str(uuid.uuid4())
        devices.append(
            Device(
                id=device_id,
                name=f"bench-{i:05d}",
                kind=DeviceKind.SMART_BOX_FPGA,
                site=site,
                public_key=base64.b64encode(secrets.token_bytes(32)).decode(),
                mqtt_username=device_id,
                mqtt_password_hash=password_hash,
                online=True,
                last_seen_at=now,
                status_changed_at=now,
            )
        )
    Device.objects.bulk_create(devices, batch_size=1000)
    return [device.id for device in devices]


def device_messages(device_ids: list[str], count: int, rng: random.Random) -> list:
    """Messages spread over the fleet round-robin, as devices on a common interval produce them."""
    from django.utils import timezone

    from fleet_server.devices.services import DeviceMessage

    received_at = timezone.now()
    messages = []
    for i in range(count):
        message = status_message(rng) if rng.random() < STATUS_SHARE else telemetry_message(rng)
        messages.append(DeviceMessage(device_ids[i % len(device_ids)], message, received_at))
    return messages


def empty_telemetry() -> None:
    from django.db import connection

    from fleet_server.devices.models import TelemetrySample

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {TelemetrySample._meta.db_table}")


# --- direct calls ----------------------------------------------------------------------------------


def _ingest_in_batches(messages: list, batch_size: int, cpu: list[float]):
    from fleet_server.devices.services import ingest_device_messages

    def run() -> int:
        start = time.process_time()
        for i in range(0, len(messages), batch_size):
            ingest_device_messages(messages[i : i + batch_size])
        # This process's own CPU: the rest of the wall time is PostgreSQL and waiting for it.
        cpu.append((time.process_time() - start) / len(messages))
        return len(messages)

    return run


# --- end to end through the broker ---------------------------------------------------------------


class BrokerRun:
    """One ``MqttIngest`` in a thread, fed by a publisher in this process; cleans its session away."""

    def __init__(self):
        import paho.mqtt.client as mqtt

        from fleet_protocol.broker import BrokerAddress
        from fleet_server.mqtt_bridge.ingest import MqttIngest

        self.address = BrokerAddress.from_url(MQTT_URL)
        suffix = uuid.uuid4().hex[:12]
        # Unique names: another ingest on the same broker (a running demo) neither steals these
        # messages from the shared subscription nor has its own stolen.
        self.client_id = f"bench-ingest-{suffix}"
        self.ingest = MqttIngest(self.client_id, share_group=f"bench-{suffix}", batch_size=BATCH, flush_s=0.25)
        self.thread = threading.Thread(target=self._run_ingest, name="bench-ingest", daemon=True)
        self.publisher = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-publisher-{suffix}", protocol=mqtt.MQTTv311
        )
        self.address.configure(self.publisher)

    def _run_ingest(self) -> None:
        from django.db import connection

        try:
            self.ingest.run()
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self) -> "BrokerRun":
        self.thread.start()
        try:
            if not self.ingest.wait_subscribed(10):
                raise RuntimeError(f"the ingest did not subscribe at {self.address.url()} within 10 s")
            self.publisher.connect(self.address.host, self.address.port, keepalive=30)
        except BaseException:
            self._stop_ingest()
            self._remove_session()
            raise
        self.publisher.loop_start()
        return self

    def _stop_ingest(self) -> None:
        self.ingest.stop()
        self.thread.join(15)

    def __exit__(self, *exc_info) -> None:
        self.publisher.disconnect()
        self.publisher.loop_stop()
        self._stop_ingest()
        self._remove_session()

    def _remove_session(self) -> None:
        """The ingest's session is persistent; a clean connection under its id makes the broker drop it."""
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True, protocol=mqtt.MQTTv311
        )
        self.address.configure(client)
        accepted = threading.Event()
        client.on_connect = lambda *args: accepted.set()
        with contextlib.suppress(OSError):
            client.connect(self.address.host, self.address.port, keepalive=10)
            client.loop_start()
            # The broker has dropped the old session once it answers the clean connection.
            accepted.wait(5)
            client.disconnect()
            client.loop_stop()

    def publish_and_wait(self, payloads: list[tuple[str, bytes]], timeout_s: float) -> int:
        """Publish everything and return once the ingest has committed it all."""
        expected = self.ingest.counts["telemetry"] + len(payloads)
        deadline = time.perf_counter() + timeout_s
        for topic, payload in payloads:
            self.publisher.publish(topic, payload, qos=0)
        while self.ingest.counts["telemetry"] < expected:
            if time.perf_counter() > deadline:
                missing = expected - self.ingest.counts["telemetry"]
                raise RuntimeError(f"{missing} of {len(payloads)} messages did not arrive within {timeout_s:.0f} s")
            time.sleep(0.005)
        return len(payloads)


# --- the benchmark ---------------------------------------------------------------------------------


def _queries_per_batch(messages: list) -> int:
    """How many SQL statements one batch costs: the number that bounds the batched rate."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from fleet_server.devices.services import ingest_device_messages

    empty_telemetry()
    with CaptureQueriesContext(connection) as queries:
        ingest_device_messages(messages[:BATCH])
    return len(queries.captured_queries)


def run(options: Options) -> Result:
    setup_django()
    import fleet_protocol as fp
    from fleet_server.devices.models import TelemetrySample

    rng = random.Random(20240602)  # fixed: every run measures the same messages
    rounds = 2 if options.quick else 5
    batched_count = 1_000 if options.quick else 10_000
    single_count = 200 if options.quick else 1_000
    broker_count = 1_000 if options.quick else 10_000

    device_ids = create_fleet(DEVICES)
    messages = device_messages(device_ids, batched_count, rng)
    broker_payloads = [
        (fp.topic(device_ids[i % DEVICES], fp.Channel.TELEMETRY), fp.encode(telemetry_message(rng)))
        for i in range(broker_count)
    ]
    queries_per_batch = _queries_per_batch(messages)

    cpu_per_message: list[float] = []
    workloads = [
        Workload("batched", _ingest_in_batches(messages, BATCH, cpu_per_message), setup=empty_telemetry),
        # A prefix of the same messages: one commit each is too slow to wait for all of them.
        Workload("single", _ingest_in_batches(messages[:single_count], 1, []), setup=empty_telemetry),
    ]
    broker_skipped = None
    with contextlib.ExitStack() as stack:
        try:
            broker = stack.enter_context(BrokerRun())
        except (OSError, RuntimeError) as exc:
            broker_skipped = f"{type(exc).__name__}: {exc}"
        else:
            timeout_s = max(60.0, broker_count / 100)
            workloads.append(
                Workload("broker", lambda: broker.publish_and_wait(broker_payloads, timeout_s), setup=empty_telemetry)
            )
        rates = measure_rates(workloads, rounds)
    if not broker_skipped and TelemetrySample.objects.count() != broker_count:
        # The broker round ran last: every message it counted must be a row.
        raise RuntimeError("the ingest counted messages that are not in the database")
    empty_telemetry()
    postgres = _postgres_settings()

    mix = f"{round(100 * (1 - STATUS_SHARE))} % telemetry, {round(100 * STATUS_SHARE)} % status online"
    direct = compare(f"{mix}, {DEVICES:,} devices", rates, "batched", "single")
    tables = [Table(f"batches of {BATCH}", "one message per call", [direct], title="Direct calls")]
    devices_per_process = direct.measured * TELEMETRY_INTERVAL_S
    cpu_us = statistics.median(cpu_per_message) * 1e6
    notes = [
        f"Extrapolation: at one message per device every {TELEMETRY_INTERVAL_S} s, one ingest process keeps up "
        f"with about {devices_per_process:,.0f} devices, so {TARGET_DEVICES:,} devices need "
        f"{math.ceil(TARGET_DEVICES / devices_per_process)} ingest processes at this rate, each with its "
        "share of a PostgreSQL that keeps up (here PostgreSQL runs on the same cores).",
        f"Of the {1e6 / direct.measured:.0f} µs each message takes in batches, {cpu_us:.0f} µs are this "
        f"process's own CPU (Django and psycopg; a core's worth is {1e6 / cpu_us:,.0f} msgs/s) and the rest is "
        f"waiting for PostgreSQL. One batch of {BATCH} runs {queries_per_batch} SQL statements.",
        f"PostgreSQL {postgres['server_version'].split()[0]} with fsync={postgres['fsync']}, "
        f"synchronous_commit={postgres['synchronous_commit']}: every commit waits for its WAL flush, which "
        "is what one message per call pays for each message.",
        f"Messages per round: {batched_count:,} in batches, the first {single_count:,} of them one per call"
        + ("" if broker_skipped else f", {broker_count:,} through the broker")
        + f"; median of {rounds} rounds.",
    ]
    if broker_skipped:
        notes.append(f"End to end through the broker skipped: {broker_skipped}.")
    else:
        notes.append(
            "End to end, the publisher shares this process (and its GIL) with the ingest, so that ratio is a "
            "lower bound. Only QoS 0 telemetry is measured: QoS 1 messages (status, acks) are acknowledged "
            "after their batch commits, so their rate depends on the broker's inflight and queue limits."
        )
        end_to_end = compare(
            f"telemetry published at QoS 0 until committed, {DEVICES:,} devices", rates, "broker", "batched"
        )
        tables.append(Table("through Mosquitto", f"direct batches of {BATCH}", [end_to_end], title="End to end"))
    return Result(
        title="ingest throughput (one worker process, PostgreSQL)",
        description=__doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0],
        tables=tables,
        notes=notes,
        details={
            "devices": DEVICES,
            "batch_size": BATCH,
            "status_share": STATUS_SHARE,
            "rounds": rounds,
            "messages": {"batched": batched_count, "single": single_count, "broker": broker_count},
            "queries_per_batch": queries_per_batch,
            "ingest_cpu_us_per_message": cpu_us,
            "devices_per_process_at_10s": devices_per_process,
            "processes_for_100k_devices": math.ceil(TARGET_DEVICES / devices_per_process),
            "broker": None if broker_skipped else MQTT_URL,
            "broker_skipped": broker_skipped,
            "postgres": postgres,
        },
    )
