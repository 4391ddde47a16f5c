"""Create a one-time claim token for a site and print it (and the enroll command line)."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from fleet_server.devices.models import Site
from fleet_server.devices.services import create_claim_token


class Command(BaseCommand):
    help = "Create a one-time claim token that enrolls one device into SITE. Prints the token once."

    def add_arguments(self, parser):
        parser.add_argument("site", help="slug of the site (park) the device will belong to")
        parser.add_argument("--hours", type=float, default=24.0, help="how long the token stays valid (default 24)")
        parser.add_argument("--note", default="", help="a note for the audit trail, e.g. the installer's name")

    def handle(self, *args, site: str, hours: float, note: str, **options):
        try:
            target = Site.objects.get(slug=site)
        except Site.DoesNotExist:
            raise CommandError(f"no site with slug {site!r}") from None
        if hours <= 0:
            raise CommandError("--hours must be positive")
        _, token = create_claim_token(target, ttl=timedelta(hours=hours), note=note)
        self.stdout.write(token)
