"""Run a blob server until SIGTERM or Ctrl-C."""

import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from fleet_server.mqtt_bridge.blob_server import build_blob_server


class Command(BaseCommand):
    help = (
        "Answer devices' chunk requests (blob/req, a shared subscription so several servers split the "
        "load) with the chunks of the blobs their deploy commands name, from the registry's blob store."
    )

    def add_arguments(self, parser):
        parser.add_argument("--client-id", default=None, help="MQTT client id (default: host name and a random tag)")

    def handle(self, *args, client_id=None, **options):
        server = build_blob_server(client_id)
        signal.signal(signal.SIGTERM, lambda *_: server.stop())
        signal.signal(signal.SIGINT, lambda *_: server.stop())
        self.stdout.write(
            f"blob_server: serving as {server.client_id} (window {settings.BLOB_WINDOW_PER_DEVICE} per device, "
            f"{settings.BLOB_MAX_INFLIGHT} in flight)"
        )
        self.stdout.flush()
        server.run()
        self.stdout.write(f"blob_server: stopped; {dict(server.counts)}")
