"""Is a service there? Used by the demo to pick real services or start embedded ones."""

import socket
import threading

import paho.mqtt.client as mqtt

from fleet_protocol.broker import BrokerAddress


def tcp_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mqtt_reachable(url: str, timeout_s: float = 3.0) -> bool:
    """True when an MQTT broker at ``url`` accepts a connection with its credentials."""
    try:
        address = BrokerAddress.from_url(url)
    except ValueError:
        return False
    accepted = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    address.configure(client)
    client.on_connect = lambda c, u, f, reason_code, p: reason_code.is_failure or accepted.set()
    try:
        client.connect(address.host, address.port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    try:
        return accepted.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
