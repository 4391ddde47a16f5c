"""Run a compression job in this process, printing its progress: the worker's code path without a worker."""

import json

from django.core.management.base import BaseCommand, CommandError

from fleet_server.registry import presets, services
from fleet_server.registry.compression_jobs import run_job
from fleet_server.registry.models import CompressionJob, JobStatus, ModelVersion


class Command(BaseCommand):
    help = (
        "Compress a model version with a preset and build its package. VERSION is a version id or FAMILY:N "
        f"(add --tenant when the family name is not unique). Presets: {', '.join(presets.PRESETS)}."
    )

    def add_arguments(self, parser):
        parser.add_argument("version", help="model version id, or FAMILY:N")
        parser.add_argument("--preset", required=True, choices=list(presets.PRESETS))
        parser.add_argument("--tenant", help="tenant slug, to pick FAMILY among tenants")
        parser.add_argument("--steps", type=int, help="training steps of a 3-bit preset (ADMM; fine-tuning a third)")
        parser.add_argument(
            "--set", dest="preset_settings", action="append", default=[], metavar="NAME=VALUE",
            help="override one preset setting, e.g. --set calibration_frames=8 (repeatable)",
        )  # fmt: skip

    def handle(
        self, *args, version: str, preset: str, tenant: str | None, steps: int | None, preset_settings, **options
    ):
        target = self._version(version, tenant)
        try:
            overrides = presets.scaled_steps(preset, steps) if steps else {}
            overrides |= dict(self._setting(item) for item in preset_settings)
            job = services.start_compression_job(target, preset, overrides, enqueue=False)
        except presets.PresetError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"job {job.pk}: {preset} of {target}")
        status = run_job(job.pk, listener=self._print_progress)
        self.stdout.write("")
        job = CompressionJob.objects.select_related("package").get(pk=job.pk)
        if status != JobStatus.SUCCEEDED:
            raise CommandError(f"job {job.pk} {job.status}: {job.error}")
        package = job.package
        self.stdout.write(job.report["markdown"])
        self.stdout.write(
            f"package {package.family.name} v{package.version} (id {package.pk}): {package.size_bytes:,} bytes "
            f"encrypted, sha256 {package.blob_sha256}"
        )

    def _print_progress(self, reporter) -> None:
        loss = (
            f"  loss {reporter.losses[-1][1]:.4f}"
            if reporter.losses and reporter.phase in ("admm", "finetune", "prune")
            else ""
        )
        self.stdout.write(f"\r{reporter.phase:<12} {reporter.step:>6}/{reporter.total}{loss:<16}", ending="")
        self.stdout.flush()

    @staticmethod
    def _setting(item: str) -> tuple[str, object]:
        name, separator, value = item.partition("=")
        if not separator:
            raise CommandError(f"--set takes NAME=VALUE, got {item!r}")
        try:
            return name.strip(), json.loads(value)
        except json.JSONDecodeError:
            raise CommandError(f"--set {name}: {value!r} is not a number") from None

    @staticmethod
    def _version(text: str, tenant: str | None) -> ModelVersion:
        versions = ModelVersion.objects.select_related("family")
        if text.isdigit():
            found = versions.filter(pk=int(text))
        else:
            family, _, number = text.rpartition(":")
            if not family or not number.isdigit():
                raise CommandError(f"VERSION is an id or FAMILY:N, got {text!r}")
            found = versions.filter(family__name=family, version=int(number))
            if tenant:
                found = found.filter(family__tenant__slug=tenant)
        matches = list(found[:2])
        if not matches:
            raise CommandError(f"no model version {text!r}")
        if len(matches) > 1:
            raise CommandError(f"{text!r} names versions of several tenants: add --tenant")
        return matches[0]
