"""``make demo``: the platform, a broker, a Celery worker and beat, and three real agents, on this machine."""

import hashlib
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from fleet_server.demo.probes import free_port, mqtt_reachable, tcp_open
from fleet_server.demo.supervisor import Supervisor
from fleet_server.devices.models import Device, Site, Tag
from fleet_server.devices.services import create_claim_token
from fleet_server.tenants.models import Tenant

# One simulated device of each kind: (name, kind, cameras, tags, camera sources). Each camera replays one
# rendered view (its zones stay put), chosen by seed and view: the sources of `edge-agent run --source`.
DEMO_DEVICES = [
    ("north-gate-box", "smart_box_fpga", ["gate-in:North gate inbound", "gate-out:North gate outbound"], ["gate"],
     ["gate-in=synthetic:101:gate", "gate-out=synthetic:102:gate"]),
    ("south-lot-box", "smart_box_cpu", ["lot-a:Lot A", "lot-b:Lot B", "fire-lane:Fire lane"], ["parking"],
     ["lot-a=synthetic:103:lot", "lot-b=synthetic:104:lot:dusk", "fire-lane=synthetic:105:lot"]),
    ("lobby-camera", "integrated_camera", ["lobby:Lobby duty post"], ["indoor"], ["lobby=synthetic:106:gate"]),
]  # fmt: skip
DEMO_FPS = 2.0  # frames per second per camera: six cameras, the platform and a worker share this machine
DEMO_FAMILY = "park-detector"
DEMO_PRESET = "int8"  # projection only: a package in well under a minute (3-bit ADMM takes far longer on a CPU)
DEMO_OBSERVE_S = 20.0
EMBEDDED_BROKER_PORT = 18830
AMQTT_CONFIG = """\
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:{port}
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
"""


class _Stop(Exception):
    pass


def _raise_stop(*_):
    raise _Stop


class Command(BaseCommand):
    help = (
        "Run the demo: web console, MQTT ingest, Celery worker and beat, and three enrolled agents (one per "
        "device kind). Uses MQTT_URL / CELERY_BROKER_URL / DATABASE_URL when set and reachable, otherwise an "
        "embedded broker, Redis on 127.0.0.1 (or a spool folder) and SQLite. Ctrl-C stops everything."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="console port (next free one if taken)")
        parser.add_argument("--telemetry-interval", type=float, default=5.0, help="agents' telemetry period (s)")
        parser.add_argument(
            "--no-deploy", action="store_true", help="do not compress and deploy the shipped detector to the devices"
        )

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def handle(self, *args, port: int, telemetry_interval: float, no_deploy: bool = False, **options):
        root = Path(settings.REPO_ROOT)
        demo_dir = Path(settings.DATA_DIR) / "demo"
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DEBUG": os.environ.get("DEBUG", "1")}
        supervisor = Supervisor(log_dir=demo_dir / "logs", env=env, cwd=root)
        # Set both explicitly: a shell that starts us in the background leaves SIGINT ignored.
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, _raise_stop)
        try:
            self._start(supervisor, env, root, demo_dir, bin_dir, port, telemetry_interval)
            if not no_deploy:
                # Beside the watch loop, so device presence keeps being reported while the model is compressed.
                threading.Thread(target=self._deploy_in_background, args=(supervisor, root), daemon=True).start()
            self._watch(supervisor)
        except _Stop:
            self.say("\nstopping: agents first (they say 'offline'), then the platform…")
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            supervisor.stop_all()
        self.say("demo stopped")

    def _start(self, supervisor, env, root, demo_dir, bin_dir, port, telemetry_interval):
        # --- services: real ones when configured and reachable, embedded ones otherwise ---
        mqtt_url = os.environ.get("MQTT_URL")
        if mqtt_url and mqtt_reachable(mqtt_url):
            self.say(f"MQTT broker: {mqtt_url}")
        else:
            if mqtt_url:
                self.say(f"MQTT_URL {mqtt_url} is unreachable; starting an embedded broker instead")
            # A stable port when possible, so agents enrolled by an earlier run find their broker again.
            broker_port = EMBEDDED_BROKER_PORT if not tcp_open("127.0.0.1", EMBEDDED_BROKER_PORT) else free_port()
            config = demo_dir / "amqtt.yaml"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(AMQTT_CONFIG.format(port=broker_port))
            supervisor.start("broker", [str(bin_dir / "amqtt"), "-c", str(config)])
            mqtt_url = f"mqtt://127.0.0.1:{broker_port}"
            # The embedded broker has no shared subscriptions; one ingest worker subscribes plainly.
            env["MQTT_SHARED_GROUP"] = ""
            self._wait("the embedded MQTT broker", lambda: mqtt_reachable(mqtt_url, timeout_s=1))
            self.say(f"MQTT broker: embedded amqtt at {mqtt_url} (local use only)")
        env["MQTT_URL"] = mqtt_url
        env.pop("MQTT_PUBLIC_URL", None)

        celery_url = os.environ.get("CELERY_BROKER_URL")
        if not celery_url:
            celery_url = "redis://127.0.0.1:6379/0" if tcp_open("127.0.0.1", 6379) else "filesystem://"
        env["CELERY_BROKER_URL"] = celery_url
        self.say(f"task queue: {celery_url}")
        self.say(f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}")

        call_command("migrate", interactive=False, verbosity=0)
        password = self._seed()

        # --- the platform's processes ---
        if not tcp_open("127.0.0.1", port, timeout_s=0.3):
            web_port = port
        else:
            web_port = free_port()
            self.say(f"port {port} is taken; using {web_port}")
        url = f"http://127.0.0.1:{web_port}"
        supervisor.start(
            "web",
            [str(bin_dir / "gunicorn"), "--pythonpath", "platform", "fleet_server.wsgi:application",
             "--bind", f"127.0.0.1:{web_port}", "--workers", "2", "--threads", "4", "--access-logfile", "-"],
        )  # fmt: skip
        manage = [sys.executable, str(root / "manage.py")]
        supervisor.start("ingest", [*manage, "mqtt_ingest", "--client-id", "demo-ingest"])
        supervisor.start("blobs", [*manage, "blob_server", "--client-id", "demo-blobs"])
        celery = [str(bin_dir / "celery"), "--workdir", "platform", "-A", "fleet_server"]
        supervisor.start("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "1"])
        supervisor.start(
            "beat", [*celery, "beat", "--loglevel", "INFO", "--schedule", str(demo_dir / "celerybeat-schedule")]
        )
        self._wait("the web console", lambda: self._healthy(url), timeout_s=60, supervisor=supervisor)

        # --- three real agents, enrolled through the real enrollment API ---
        site = Site.objects.get(slug="riverside")
        for name, kind, cameras, tags, sources in DEMO_DEVICES:
            state_dir = demo_dir / "agents" / name
            device_id = self._enrolled_device_id(state_dir, mqtt_url)
            if device_id is None:
                shutil.rmtree(state_dir, ignore_errors=True)
                _, token = create_claim_token(site, note=f"demo: {name}")
                argv = [str(bin_dir / "edge-agent"), "--state-dir", str(state_dir), "enroll", "--server", url,
                        "--token", token, "--kind", kind, "--name", name]  # fmt: skip
                for camera in cameras:
                    argv += ["--camera", camera]
                result = supervisor.run_once(f"enroll-{name}", argv)
                if result.returncode != 0:
                    raise CommandError(f"enrolling {name} failed: {result.stderr.strip() or result.stdout.strip()}")
                device_id = self._enrolled_device_id(state_dir, mqtt_url)
                Device.objects.get(pk=device_id).tags.set([Tag.objects.get_or_create(name=t)[0] for t in tags])
                self.say(f"enrolled {name} ({kind}) as {device_id}")
            argv = [str(bin_dir / "edge-agent"), "--state-dir", str(state_dir), "run",
                    "--telemetry-interval", str(telemetry_interval),
                    "--fps", str(DEMO_FPS), "--threads", "1"]  # fmt: skip
            for source in sources:
                argv += ["--source", source]
            supervisor.start(f"agent-{name}", argv)

        self.say("")
        self.say(f"  console   {url}/")
        self.say(f"  login     admin / {password}")
        self.say(f"  API docs  {url}/api/docs/")
        self.say(f"  logs      {supervisor.log_dir}/")
        self.say("  Ctrl-C stops everything.")
        self.say("")

    # --- compress → deploy: the shipped detector onto the three devices ---

    def _deploy_in_background(self, supervisor, root: Path) -> None:
        try:
            self._deploy_detector(supervisor, root)
        except Exception as exc:  # the platform keeps running; the operator can deploy from the console
            self.say(f"deploying the detector failed: {exc}")
        finally:
            connections.close_all()

    def _deploy_detector(self, supervisor, root: Path) -> None:
        """Import the shipped checkpoint, compress it on the Celery worker (once: a package of the same
        checkpoint is reused), and deploy it with each camera's zones to every demo device."""
        from fleet_server.registry.models import Package

        version = self._shipped_version(root)
        package = Package.objects.filter(model_version=version, job__preset=DEMO_PRESET).order_by("-version").first()
        if package is None:
            package = self._compress(version, supervisor)
        else:
            self.say(
                f"package {package.family.name} v{package.version}: cached ({package.codebook}, unchanged checkpoint)"
            )
        devices = list(Device.objects.filter(name__in=[d[0] for d in DEMO_DEVICES], revoked_at__isnull=True))
        self._wait(
            "the devices to come online",
            lambda: all(d.online and d.runtimes for d in Device.objects.filter(pk__in=[d.pk for d in devices])),
            timeout_s=120,
            supervisor=supervisor,
        )
        devices = [d for d in Device.objects.filter(pk__in=[d.pk for d in devices]) if not self._runs(d, package)]
        if not devices:
            self.say("every device already runs this package")
            return
        deployment = self._send_deployment(package, devices)
        self._follow(deployment, supervisor)

    def _shipped_version(self, root: Path):
        from fleet_server.registry.models import ModelFamily, ModelVersion
        from fleet_server.registry.services import register_version

        checkpoint = root / "smartpark" / "checkpoints" / "detector.pt"
        digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        tenant = Tenant.objects.get(slug="demo-parks")
        family, _ = ModelFamily.objects.get_or_create(
            tenant=tenant, name=DEMO_FAMILY, defaults={"labels": ["vehicle", "person"], "description": "shipped"}
        )
        version = ModelVersion.objects.filter(family=family, blob_sha256=digest).order_by("-version").first()
        if version is None:
            version = register_version(family, str(checkpoint), filename=checkpoint.name, notes="the shipped detector")
            self.say(f"imported the shipped detector as {version}")
        return version

    def _compress(self, version, supervisor):
        from fleet_server.registry.models import CompressionJob, JobStatus
        from fleet_server.registry.services import start_compression_job

        job = start_compression_job(version, DEMO_PRESET)
        self.say(f"compressing {version} ({DEMO_PRESET}) on the Celery worker: job {job.pk}")
        last = ""
        while True:
            job = CompressionJob.objects.get(pk=job.pk)
            line = f"  {job.phase or job.status} {job.percent:.0f} %"
            if line != last:
                self.say(line)
                last = line
            if job.is_final:
                break
            if supervisor.exited():
                child = supervisor.exited()[0]
                raise CommandError(f"{child.name} exited while compressing; see {child.log_path}")
            time.sleep(1)
        if job.status != JobStatus.SUCCEEDED:
            raise CommandError(f"compression job {job.pk} {job.status}: {job.error}")
        package = job.package
        self.say(
            f"package {package.family.name} v{package.version}: {package.compression_ratio:.1f}x smaller, "
            f"{package.size_bytes:,} bytes encrypted"
        )
        return package

    @staticmethod
    def _runs(device, package) -> bool:
        """The device took this package before and reports it active (a demo restarted on the same agents)."""
        return any(
            slot.get("active") and slot.get("model") == package.family.name and slot.get("version") == package.version
            for slot in device.model_slots
        )

    def _send_deployment(self, package, devices):
        from edge_agent.video.spec import open_source
        from fleet_server.rollouts.services import deploy

        configs = []
        for name, _kind, _cameras, _tags, sources in DEMO_DEVICES:
            if any(d.name == name for d in devices):
                for camera_id, _, spec in (source.partition("=") for source in sources):
                    configs.append(open_source(camera_id, spec, size=None, fps=DEMO_FPS).scene_config().to_dict())
        deployment = deploy(package, devices, scene_configs=configs, observe_s=DEMO_OBSERVE_S, name="demo")
        self.say(
            f"deploying {package.family.name} v{package.version} to {len(devices)} devices (deployment {deployment.pk})"
        )
        return deployment

    def _follow(self, deployment, supervisor) -> None:
        """Print each device's update progress until all are final (the console shows the same, live)."""
        last = ""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            targets = list(deployment.targets.select_related("device", "command"))
            line = ", ".join(
                f"{t.device.name} {t.command.state}"
                + (f" {t.command.progress:.0f}%" if t.command.progress is not None and not t.command.is_final else "")
                for t in targets
            )
            if line != last:
                self.say(f"  {line}")
                last = line
            if all(t.command.is_final for t in targets):
                failed = [t for t in targets if t.command.state not in ("healthy", "done")]
                for t in failed:
                    self.say(f"  {t.device.name}: {t.command.state}: {t.command.reason}")
                if not failed:
                    self.say("deployed: occupancy and alerts appear in the console's park view")
                return
            if supervisor.exited():
                child = supervisor.exited()[0]
                raise CommandError(f"{child.name} exited while deploying; see {child.log_path}")
            time.sleep(1)
        self.say("the deployment is still running; follow it in the console")

    def _watch(self, supervisor) -> None:
        announced = -1
        while True:
            crashed = supervisor.exited()
            if crashed:
                child = crashed[0]
                raise CommandError(f"{child.name} exited with status {child.process.returncode}; see {child.log_path}")
            online = Device.objects.filter(online=True).count()
            if online != announced:
                self.say(f"{online}/{Device.objects.count()} devices online")
                announced = online
            time.sleep(1)

    def _seed(self) -> str:
        """The demo's business unit, park and admin; a fresh admin password every run."""
        tenant, _ = Tenant.objects.get_or_create(slug="demo-parks", defaults={"name": "Demo Parks Ltd"})
        Site.objects.get_or_create(
            slug="riverside",
            defaults={"name": "Riverside Park", "tenant": tenant, "time_zone": "Europe/Amsterdam"},
        )
        password = secrets.token_urlsafe(9)
        admin, _ = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
        admin.is_staff = admin.is_superuser = True
        admin.set_password(password)
        admin.save()
        return password

    @staticmethod
    def _enrolled_device_id(state_dir: Path, mqtt_url: str) -> str | None:
        """The device an earlier run enrolled here, if it still fits; a stale demo device is removed."""
        from edge_agent.identity import DeviceIdentity, NotEnrolled

        try:
            identity = DeviceIdentity.load(state_dir)
        except NotEnrolled:
            return None
        if identity.mqtt_url != mqtt_url:
            Device.objects.filter(pk=identity.device_id).delete()
            return None
        return identity.device_id if Device.objects.filter(pk=identity.device_id).exists() else None

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310 - our own URL
                return response.status == 200
        except OSError:
            return False

    def _wait(self, what: str, ready, timeout_s: float = 30, supervisor=None) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if supervisor and supervisor.exited():
                child = supervisor.exited()[0]
                raise CommandError(f"{child.name} exited while waiting for {what}; see {child.log_path}")
            if time.monotonic() > deadline:
                raise CommandError(f"{what} did not come up within {timeout_s:.0f} s")
            time.sleep(0.3)
