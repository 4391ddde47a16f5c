"""The on-disk event outbox: numbering, order, pruning, and durability across a SIGKILL mid-batch."""

import os
import signal
import subprocess
import sys
import threading
import uuid

import pytest

import fleet_protocol as fp
from edge_agent.backoff import Backoff
from edge_agent.event_publisher import EventPublisher
from edge_agent.outbox import EventOutbox
from tests.helpers import REPO, wait_until


def event(zone: str = "N1", **fields) -> dict:
    return {"event_id": str(uuid.uuid4()), "rule": "occupancy", "camera": "cam-1", "zone": zone, "start": 1.7e9,
            "attributes": {"state": "occupied"}, **fields}  # fmt: skip


def test_add_numbers_events_in_order_and_mark_sent_prunes(tmp_path):
    # given
    with EventOutbox(tmp_path / "outbox.db") as outbox:
        first = outbox.add([event("N1"), event("N2")])
        second = outbox.add([event("N3")])
        # then
        assert [e.seq for e in first + second] == [1, 2, 3]
        assert [e.zone for e in outbox.pending(10)] == ["N1", "N2", "N3"]
        assert [e.seq for e in outbox.pending(10, after_seq=1)] == [2, 3]
        assert outbox.depth() == 3
        # when
        assert outbox.mark_sent(2) == 2
        # then
        assert [e.seq for e in outbox.pending(10)] == [3]
    # seq keeps counting after a reopen even though the sent rows are gone
    with EventOutbox(tmp_path / "outbox.db") as outbox:
        outbox.mark_sent(3)
        assert outbox.depth() == 0
        assert [e.seq for e in outbox.add([event()])] == [4]


def test_invalid_event_writes_nothing(tmp_path):
    with EventOutbox(tmp_path / "outbox.db") as outbox:
        with pytest.raises(ValueError, match="not a valid event"):
            outbox.add([event(), event(rule="speeding")])
        assert outbox.depth() == 0


def test_wal_mode_and_threads(tmp_path):
    with EventOutbox(tmp_path / "outbox.db") as outbox:
        assert outbox._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        threads = [
            threading.Thread(target=lambda: [outbox.add([event(), event()]) for _ in range(25)]) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seqs = [e.seq for e in outbox.pending(1000)]
        assert seqs == list(range(1, 201))


WRITER = """
import sys, uuid
from edge_agent.outbox import EventOutbox
outbox = EventOutbox(sys.argv[1])
batch = 0
while True:
    events = [{"event_id": str(uuid.uuid4()), "rule": "line_count", "camera": "gate", "zone": f"{batch}:{i}",
               "start": 1.7e9 + batch} for i in range(50)]
    outbox.add(events)
    print(batch, flush=True)
    batch += 1
"""


def test_sigkill_mid_batch_loses_no_committed_batch_and_keeps_order(tmp_path):
    # given a writer adding batches of 50 as fast as it can
    path = tmp_path / "outbox.db"
    log = tmp_path / "writer.log"
    with open(log, "w") as out:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO, stdout=out,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    try:
        wait_until(lambda: len(log.read_text().split()) >= 5, timeout=20, message="five committed batches")
        # when it is killed at an arbitrary point, most likely inside a transaction
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    finally:
        if writer.poll() is None:
            writer.kill()
    reported = len(log.read_text().split())
    # then every batch it reported committed is there, whole, in order, and numbering resumes after it
    with EventOutbox(path) as outbox:
        events = outbox.pending(100_000)
        assert len(events) % 50 == 0
        assert len(events) // 50 >= reported
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.zone for e in events] == [f"{b}:{i}" for b in range(len(events) // 50) for i in range(50)]
        assert outbox.add([event()])[0].seq == len(events) + 1


# --- the publisher, against a private Mosquitto that goes away and comes back ---


class Subscriber:
    """Collects the seq of every event message on the broker (resubscribing after each reconnect)."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt

        self.seqs: list[int] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda client, *_: client.subscribe(fp.subscription(fp.Channel.EVENTS), qos=1)
        self.client.on_message = lambda _c, _u, msg: self.seqs.append(fp.decode(msg.payload).body.seq)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def device_client(port: int):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev-1", clean_session=False)
    client.reconnect_delay_set(0.1, 0.5)
    client.connect_async("127.0.0.1", port)
    client.loop_start()
    return client


def test_publisher_sends_in_order_and_resends_after_broker_outage(tmp_path, mosquitto):
    # given a device session, a subscriber and a publisher on the outbox
    subscriber = Subscriber(mosquitto.port)
    client = device_client(mosquitto.port)
    outbox = EventOutbox(tmp_path / "outbox.db")
    topic = fp.topic("dev-1", fp.Channel.EVENTS)
    publisher = EventPublisher(outbox, lambda payload: client.publish(topic, payload, qos=1), client.is_connected,
                               ack_timeout_s=2, backoff=Backoff(0.1, 0.5))  # fmt: skip
    publisher.start()
    try:
        wait_until(lambda: client.is_connected() and subscriber.client.is_connected(), 10, message="connections")
        # when events are added while the broker is up
        outbox.add([event(zone=str(i)) for i in range(30)])
        # then they arrive in seq order and leave the outbox
        wait_until(lambda: len(subscriber.seqs) >= 30, 20, message="the first 30 events")
        assert subscriber.seqs[:30] == list(range(1, 31))
        wait_until(lambda: outbox.depth() == 0, 10, message="acknowledged events pruned")

        # when the broker goes down, events pile up, and the broker comes back
        mosquitto.stop()
        wait_until(lambda: not client.is_connected(), 10, message="the device to notice")
        outbox.add([event(zone=str(i)) for i in range(30, 60)])
        assert outbox.depth() == 30
        mosquitto.start()
        # then everything arrives, at least once, in order of first arrival, and nothing stays behind
        wait_until(lambda: set(subscriber.seqs) >= set(range(1, 61)), 30, message="all 60 events")
        first_seen = list(dict.fromkeys(subscriber.seqs))
        assert first_seen == list(range(1, 61))
        wait_until(lambda: outbox.depth() == 0, 10, message="the outbox to drain")
        assert publisher.published >= 60
    finally:
        publisher.stop()
        client.disconnect()
        client.loop_stop()
        subscriber.close()
        outbox.close()
