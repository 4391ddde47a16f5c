"""Issue an API key for a business unit; the key is printed once and never stored in clear."""

from django.core.management.base import BaseCommand, CommandError

from fleet_server.tenants.models import Tenant
from fleet_server.tenants.services import issue_api_key


class Command(BaseCommand):
    help = "Issue an API key for a tenant (business unit). Prints the key once; store it safely."

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="slug of the tenant")
        parser.add_argument("--name", required=True, help="what the key is for")

    def handle(self, *args, tenant: str, name: str, **options):
        try:
            owner = Tenant.objects.get(slug=tenant)
        except Tenant.DoesNotExist:
            raise CommandError(f"no tenant with slug {tenant!r}; create it in the admin first") from None
        _, key = issue_api_key(owner, name)
        self.stdout.write(key)
