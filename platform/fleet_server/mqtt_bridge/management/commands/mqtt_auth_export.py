"""Write Mosquitto's password file and ACL from the device registry."""

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fleet_protocol.broker import BrokerAddress
from fleet_server.mqtt_bridge import broker_auth


def _write_private(path: Path, text: str) -> None:
    """Atomically, readable by the owner only (the broker's user must own or be given the file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class Command(BaseCommand):
    help = (
        "Write a Mosquitto password file and ACL: the platform's login (from MQTT_URL) may use the whole "
        "fleet/v1/ tree, each enrolled, unrevoked device only fleet/v1/<its id>/. Send the broker SIGHUP "
        "afterwards to reload them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--password-file", type=Path, required=True, help="where to write the password file")
        parser.add_argument("--acl-file", type=Path, required=True, help="where to write the ACL")

    def handle(self, *args, **options):
        address = BrokerAddress.from_url(settings.MQTT_URL)
        if not address.username or not address.password:
            raise CommandError("MQTT_URL has no user and password for the platform (mqtt://user:password@host:port)")
        platform = broker_auth.PlatformLogin(address.username, address.password)
        passwords = broker_auth.password_file(platform)
        _write_private(options["password_file"], passwords)
        _write_private(options["acl_file"], broker_auth.acl_file(platform))
        devices = passwords.count("\n") - 1
        self.stdout.write(f"wrote {options['password_file']} ({devices} devices) and {options['acl_file']}")
