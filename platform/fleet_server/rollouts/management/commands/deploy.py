"""`manage.py deploy <package-id> <device>... [--observe-s N] [--wait]`: send a package to devices."""

import time

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from fleet_server.devices.models import Device
from fleet_server.registry.models import Package
from fleet_server.rollouts import services
from fleet_server.rollouts.models import SUCCEEDED_STATES, Deployment


class Command(BaseCommand):
    help = "Deploy a package to devices (by id or name); with --wait, follow them until each has a final state."

    def add_arguments(self, parser):
        parser.add_argument("package", type=int, help="package id (see /api/v1/packages/)")
        parser.add_argument("devices", nargs="+", help="device ids or names (names within the package's tenant)")
        parser.add_argument("--observe-s", type=float, default=None, help="seconds to observe before committing")
        parser.add_argument("--note", default="")
        parser.add_argument("--wait", action="store_true", help="print each device's progress until all finish")
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between checks with --wait")

    def handle(self, *args, **options):
        package = Package.objects.select_related("family").filter(pk=options["package"]).first()
        if package is None:
            raise CommandError(f"no package {options['package']}: list them with GET /api/v1/packages/")
        devices = [self._device(package, ref) for ref in options["devices"]]
        try:
            deployment = services.deploy(package, devices, observe_s=options["observe_s"], note=options["note"])
        except services.DeploymentError as exc:
            raise CommandError(f"nothing was sent: {exc}") from None
        self.stdout.write(f"deployment {deployment.pk}: {deployment} to {len(devices)} devices")
        for target in deployment.targets.select_related("device"):
            self.stdout.write(f"  {target.device.name} ({target.device_id}): command {target.command_id}")
        if options["wait"]:
            self._wait(deployment, options["interval"])

    def _device(self, package: Package, ref: str) -> Device:
        tenant_devices = Device.objects.select_related("site").filter(site__tenant=package.family.tenant_id)
        matches = list(tenant_devices.filter(Q(pk=ref) | Q(name=ref))[:2]) or list(Device.objects.filter(pk=ref))
        if not matches:
            raise CommandError(f"no device {ref!r} in {package.family.tenant}'s parks")
        if len(matches) > 1:
            raise CommandError(f"more than one device is named {ref!r}: give its id")
        return matches[0]

    def _wait(self, deployment: Deployment, interval: float) -> None:
        seen = {}
        while True:
            targets = list(deployment.targets.select_related("device", "command"))
            for target in targets:
                line = _describe(target)
                if seen.get(target.pk) != line:
                    seen[target.pk] = line
                    self.stdout.write(line)
            if all(target.is_final for target in targets):
                break
            time.sleep(interval)
        failed = [target for target in targets if target.state not in SUCCEEDED_STATES]
        if failed:
            raise CommandError(f"{len(failed)} of {len(targets)} devices did not install the package")
        self.stdout.write(self.style.SUCCESS(f"all {len(targets)} devices run {deployment}"))


def _describe(target) -> str:
    progress = f" {target.progress:.0f} %" if target.progress is not None else ""
    reason = f": {target.reason}" if target.reason else ""
    return f"{target.device.name}: {target.state}{progress}{reason}"
