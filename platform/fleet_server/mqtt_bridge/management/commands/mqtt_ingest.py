"""Run an MQTT ingest worker until SIGTERM or Ctrl-C."""

import signal

from django.core.management.base import BaseCommand

from fleet_server.mqtt_bridge.ingest import build_ingest, default_client_id


class Command(BaseCommand):
    help = (
        "Subscribe to every device's status, telemetry and command acks (a shared subscription, so "
        "several workers split the load), validate each message and apply it to the database."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--client-id",
            default=None,
            help=f"MQTT client id; keep it stable across restarts so the broker keeps the session "
            f"(default: {default_client_id()})",
        )

    def handle(self, *args, client_id=None, **options):
        ingest = build_ingest(client_id)
        signal.signal(signal.SIGTERM, lambda *_: ingest.stop())
        signal.signal(signal.SIGINT, lambda *_: ingest.stop())
        self.stdout.write(f"mqtt_ingest: consuming as {ingest.client_id}")
        ingest.run()
        self.stdout.write(f"mqtt_ingest: stopped; {dict(ingest.counts)}")
