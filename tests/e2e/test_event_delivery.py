"""Issue 6's must-show: 1,000 events produced while the broker is down all arrive exactly once in Postgres.

A real agent-side outbox and publisher in a subprocess (SIGKILLed once mid-way and restarted), a private
Mosquitto and the real `manage.py mqtt_ingest` process on the test database.
"""

import signal
import sys

from edge_agent.outbox import EventOutbox
from tests.conftest import forget_mqtt_session, manage
from tests.helpers import Mosquitto, wait_until

EVENTS = 1000

# The agent's side: `produce` fills the outbox (no broker needed), `publish` drains it through paho.
AGENT = """
import sys, time, uuid
import paho.mqtt.client as mqtt
import fleet_protocol as fp
from edge_agent.event_publisher import EventPublisher
from edge_agent.outbox import EventOutbox

mode, path, device_id, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
outbox = EventOutbox(path)
if mode == "produce":
    for batch in range(10):
        outbox.add([{"event_id": str(uuid.uuid4()), "rule": "line_count", "camera": "gate", "zone": "entry",
                     "start": 1.8e9 + batch * 100 + i, "attributes": {"direction": "in"}} for i in range(100)])
    print("produced", outbox.depth(), flush=True)
    sys.exit(0)
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=False)
client.reconnect_delay_set(0.1, 1)
client.connect_async("127.0.0.1", port)
client.loop_start()
topic = fp.topic(device_id, fp.Channel.EVENTS)
publisher = EventPublisher(outbox, lambda payload: client.publish(topic, payload, qos=1), client.is_connected,
                           max_in_flight=5)
publisher.start()
print("publishing", flush=True)
while True:
    time.sleep(0.5)
    print("depth", outbox.depth(), "published", publisher.published, publisher.last_error, flush=True)
"""


def agent(mode: str, path, device_id: str, port: int) -> list[str]:
    return [sys.executable, "-c", AGENT, mode, str(path), device_id, str(port)]


def test_events_produced_while_the_broker_is_down_arrive_exactly_once(tmp_path, park, processes, platform_env):
    from fleet_server.events.models import Event
    from tests.fleet_server.conftest import make_device

    # given a device whose broker is down while its cameras produce 1,000 events
    device = make_device(park, name="gate-box")
    broker = Mosquitto(tmp_path / "mosquitto")  # chosen port, not started
    outbox_path = tmp_path / "agent" / "outbox.db"
    env = {**platform_env, "MQTT_URL": broker.url}
    produced = processes.start("produce", agent("produce", outbox_path, device.pk, broker.port), env)
    assert produced.wait(60) == 0, processes.log("produce")
    assert f"produced {EVENTS}" in processes.log("produce")
    with EventOutbox(outbox_path) as outbox:
        expected = [(e.seq, e.event_id) for e in outbox.pending(EVENTS + 1)]
    assert [seq for seq, _ in expected] == list(range(1, EVENTS + 1))

    # when the broker comes back with the platform's ingest on it, and the agent starts publishing
    broker.start()
    client_id = f"ingest-{platform_env['MQTT_SHARED_GROUP']}"
    try:
        processes.start("ingest", manage("mqtt_ingest", "--client-id", client_id), env)
        wait_until(lambda: "subscribed to" in processes.log("ingest"), 30, message="the ingest to subscribe")
        processes.start("publisher", agent("publish", outbox_path, device.pk, broker.port), env)
        # ... and the agent is killed mid-way and restarted
        wait_until(lambda: Event.objects.count() >= 100, 60, message="the first 100 events in Postgres")
        processes.signal("publisher", signal.SIGKILL)
        processes.children["publisher"].wait(10)
        with EventOutbox(outbox_path) as outbox:
            assert outbox.depth() > 0, "the agent was meant to be killed with events still unsent"
        processes.start("publisher-2", agent("publish", outbox_path, device.pk, broker.port), env)

        # then all 1,000 arrive, exactly once, in seq order, and the outbox drains
        wait_until(lambda: Event.objects.count() >= EVENTS, 60, message=f"{EVENTS} events in Postgres")
        wait_until(lambda: EventOutbox(outbox_path).depth() == 0, 30, message="the agent's outbox to drain")
        rows = list(Event.objects.order_by("id").values_list("seq", "event_id", "device_id", "site_id"))
        assert len(rows) == EVENTS
        assert [(seq, str(event_id)) for seq, event_id, _, _ in rows] == expected
        assert {(d, s) for _, _, d, s in rows} == {(device.pk, park.pk)}
    finally:
        processes.stop_all()
        forget_mqtt_session(broker.url, client_id)
        broker.stop()
