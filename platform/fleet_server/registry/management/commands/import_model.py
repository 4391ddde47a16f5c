"""Upload a model checkpoint into a family (created on first use), checked as the console and API check it."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from fleet_server.registry import checkpoints, services
from fleet_server.registry.models import ModelFamily
from fleet_server.tenants.models import Tenant


class Command(BaseCommand):
    help = "Import FILE (a smart-park detector checkpoint) as the next version of FAMILY of TENANT."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="checkpoint file (smartpark.detector.save_checkpoint format)")
        parser.add_argument("--family", required=True, help="family name, e.g. lot-detector (created if new)")
        parser.add_argument("--tenant", required=True, help="slug of the business unit that owns the family")
        parser.add_argument(
            "--labels",
            help="comma-separated class names in output order; required for a new family, e.g. vehicle,person",
        )
        parser.add_argument("--input-shape", default="1,3,240,320", help="N,C,H,W of the network input")
        parser.add_argument("--notes", default="")

    def handle(
        self, *args, file: Path, family: str, tenant: str, labels: str | None, input_shape: str, notes: str, **options
    ):
        try:
            owner = Tenant.objects.get(slug=tenant)
        except Tenant.DoesNotExist:
            raise CommandError(f"no tenant with slug {tenant!r}") from None
        if not file.is_file():
            raise CommandError(f"{file} is not a file")
        wanted = [label.strip() for label in labels.split(",")] if labels else None
        try:
            shape = checkpoints.check_input_shape(part.strip() for part in input_shape.split(","))
            target = ModelFamily.objects.filter(tenant=owner, name=family).first()
            if target is None:
                if wanted is None:
                    raise CommandError(f"{owner} has no family {family!r}: give --labels to create it")
                target = services.create_family(owner, family, wanted)
                self.stdout.write(f"created family {family} ({', '.join(target.labels)})")
            elif wanted is not None and wanted != target.labels:
                raise CommandError(f"family {family} has labels {target.labels}, not {wanted}")
            version = services.register_version(target, str(file), filename=file.name, input_shape=shape, notes=notes)
        except (checkpoints.CheckpointError, services.RegistryError) as error:
            raise CommandError(f"{file}: {error}") from None
        self.stdout.write(
            f"{version} (id {version.pk}): {version.parameters:,} parameters, sha256 {version.blob_sha256}"
        )
