"""Static checks of the Helm chart (helm/smartpark-fleet) without a helm binary or a cluster.

The templates are Go templates, so they cannot be rendered here; instead the checks catch what
usually breaks a hand-written chart: unbalanced actions and blocks, a `.Values` path that
values.yaml does not have (a misspelling renders as an empty string and Helm says nothing), a
value nobody reads, and an environment variable the platform never reads (a misspelt setting
is silently ignored by Django and the default wins).

No Django here: the file runs the same with and without pytest-django.
"""

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "smartpark-fleet"
TEMPLATES = CHART / "templates"
SETTINGS = REPO / "platform" / "fleet_server" / "settings.py"

# Environment the chart sets on containers that is not a Django setting: the downward-API pod
# name (the MQTT client id of ingest and blob server) and a writable HOME on the read-only root
# filesystem.
PROCESS_ENV = {"POD_NAME", "HOME"}

# What the platform must receive in Kubernetes (docs: settings table).
EXPECTED_SETTINGS = {
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL",
    "MQTT_URL",
    "MQTT_PUBLIC_URL",
    "MQTT_SHARED_GROUP",
    "CELERY_BROKER_URL",
    "LOG_LEVEL",
    "AGENT_KEEPALIVE_S",
    "AGENT_TELEMETRY_INTERVAL_S",
    "DEVICE_OFFLINE_AFTER_S",
    "TELEMETRY_RETENTION_HOURS",
    "DEPLOY_COMMAND_TTL_S",
    "BLOB_CHUNK_BYTES",
    "BLOB_WINDOW_PER_DEVICE",
    "BLOB_MAX_INFLIGHT",
    "FLEET_DATA_DIR",
    "SECURE_SSL_REDIRECT",
    "STATIC_ROOT",
}
SECRET_SETTINGS = {"SECRET_KEY", "DATABASE_URL", "MQTT_URL", "CELERY_BROKER_URL"}

ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
BLOCK_OPENERS = ("if", "range", "with", "define", "block")
VALUES_PATH = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
ENV_KEY = re.compile(r"^\s*([A-Z][A-Z0-9_]*):\s", re.MULTILINE)
ENV_NAME = re.compile(r"^\s*-\s*name:\s*([A-Z][A-Z0-9_]*)\s*$", re.MULTILINE)
SETTING_READ = re.compile(
    r"""(?:get_str|get_bool|get_int|get_float|get_list|getenv|environ\.get)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
)


def template_files() -> list[Path]:
    return sorted(p for p in TEMPLATES.iterdir() if p.is_file())


def template_text() -> dict[str, str]:
    return {p.name: p.read_text() for p in template_files()}


def load_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def actions(text: str) -> list[str]:
    """The inside of every {{ ... }} action, comments dropped."""
    return [a for a in ACTION.findall(text) if not a.startswith("/*")]


def define_body(name: str) -> str:
    """The text of one named template of _helpers.tpl."""
    text = (TEMPLATES / "_helpers.tpl").read_text()
    start = re.search(r'\{\{-?\s*define\s+"' + re.escape(name) + r'"\s*-?\}\}', text)
    assert start, f"no define {name!r} in _helpers.tpl"
    depth = 1
    for match in ACTION.finditer(text, start.end()):
        keyword = match.group(1).split(None, 1)[0] if match.group(1) else ""
        depth += keyword in BLOCK_OPENERS
        depth -= keyword == "end"
        if depth == 0:
            return text[start.end() : match.start()]
    raise AssertionError(f"define {name!r} is never closed")


def settings_read() -> set[str]:
    return {a or b for a, b in SETTING_READ.findall(SETTINGS.read_text())}


# --- Chart.yaml and values.yaml ---------------------------------------------------------------


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "smartpark-fleet" == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", chart["version"]), chart["version"]
    assert isinstance(chart["appVersion"], str) and chart["appVersion"], "appVersion must be a quoted string"
    assert chart.get("type", "application") == "application"


def test_values_parse_and_keep_the_platform_contract():
    values = load_values()
    assert isinstance(values, dict)
    assert values["serviceAccount"]["create"] is True
    assert values["ingress"]["enabled"] is False
    assert values["persistence"]["enabled"] is False
    assert values["web"]["autoscaling"]["enabled"] is False
    assert values["worker"]["autoscaling"]["enabled"] is False
    assert values["ingest"]["replicas"] == 2
    assert values["worker"]["replicas"] == 2
    assert values["blobServer"]["enabled"] is True
    assert values["blobServer"]["replicas"] == 2
    assert values["blobServer"]["autoscaling"]["enabled"] is False
    # The settings' defaults in platform/fleet_server/settings.py and docs/operations.md.
    assert values["config"]["deployCommandTtlS"] == 86400
    assert values["config"]["blobChunkBytes"] == 65536
    assert values["config"]["blobWindowPerDevice"] == 16
    assert values["config"]["blobMaxInflight"] == 256
    assert values["config"]["mqttSharedGroup"] == "ingest"
    assert values["config"]["dataDir"] == "/var/lib/fleet"
    assert values["config"]["staticRoot"] == "/app/var/static"
    # Credentials are never defaulted: rendering fails until they are given.
    assert not any(values["secrets"][k] for k in ("secretKey", "databaseUrl", "mqttUrl", "celeryBrokerUrl"))
    security = values["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    for component in ("web", "ingest", "blobServer", "worker", "beat", "migrations"):
        assert "resources" in values[component], component


# --- template syntax --------------------------------------------------------------------------


@pytest.mark.parametrize("path", template_files(), ids=lambda p: p.name)
def test_template_delimiters_balance(path):
    text = path.read_text()
    assert text.count("{{") == text.count("}}"), f"{path.name}: unbalanced {{{{ }}}}"
    depth = 0
    for token in re.findall(r"\{\{|\}\}", text):
        depth += 1 if token == "{{" else -1
        assert depth in (0, 1), f"{path.name}: nested or stray {{{{ }}}}"
    assert depth == 0
    assert text.count("/*") == text.count("*/"), f"{path.name}: unbalanced template comment"


@pytest.mark.parametrize("path", template_files(), ids=lambda p: p.name)
def test_template_blocks_balance(path):
    depth = 0
    for action in actions(path.read_text()):
        keyword = action.split(None, 1)[0] if action else ""
        if keyword in BLOCK_OPENERS:
            depth += 1
        elif keyword == "end":
            depth -= 1
            assert depth >= 0, f"{path.name}: {{{{ end }}}} without an opening block"
    assert depth == 0, f"{path.name}: {depth} block(s) left open"


@pytest.mark.parametrize("path", [p for p in template_files() if p.suffix == ".yaml"], ids=lambda p: p.name)
def test_template_yaml_skeleton_is_yaml(path):
    # With every action replaced by a placeholder and control lines dropped, what is left must
    # still be YAML: catches tabs, broken indentation and a missing ':' in the literal parts.
    lines = []
    text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", path.read_text(), flags=re.DOTALL)
    for line in text.splitlines():
        stripped = line.strip()
        if re.fullmatch(r"(\{\{-?.*?-?\}\}\s*)+", stripped):
            continue  # a line of actions only (control flow, includes with nindent)
        lines.append(ACTION.sub("x", line))
    assert "\t" not in "\n".join(lines), f"{path.name}: tab in YAML"
    for document in "\n".join(lines).split("\n---"):
        yaml.safe_load(document)


# --- .Values paths ----------------------------------------------------------------------------


def value_paths_used() -> set[tuple[str, ...]]:
    """Every .Values.a.b path of the templates, with `$v := index $.Values $c` aliases expanded."""
    used = set()
    for name, text in template_text().items():
        for match in VALUES_PATH.finditer(text):
            used.add(tuple(match.group(1).lstrip(".").split(".")))
        for alias, loop_var in re.findall(r"(\$\w+)\s*:=\s*index\s+\$?\.Values\s+(\$\w+)", text):
            loop = re.search(re.escape(loop_var) + r"\s*:=\s*list((?:\s+\"[^\"]+\")+)", text)
            assert loop, f"{name}: {alias} indexes .Values by {loop_var}, which ranges over no literal list"
            keys = re.findall(r'"([^"]+)"', loop.group(1))
            for match in re.finditer(re.escape(alias) + r"((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text):
                for key in keys:
                    used.add((key, *match.group(1).lstrip(".").split(".")))
    return used


def resolve(values, path: tuple[str, ...]) -> bool:
    node = values
    for key in path:
        if node is None or node == {}:
            return True  # free-form maps (annotations, nodeSelector, config.extra, ...) take any key
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def test_every_values_path_in_templates_exists():
    values = load_values()
    used = value_paths_used()
    assert len(used) > 40, "the path collector found too little; is the regex broken?"
    missing = sorted(".".join(p) for p in used if not resolve(values, p))
    assert not missing, f"templates use .Values paths that values.yaml lacks: {missing}"


def leaf_paths(node, prefix=()):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaf_paths(value, (*prefix, key))
    else:
        yield prefix


def test_every_value_is_used_by_a_template():
    used = value_paths_used()

    def covered(path):
        return any(path[: len(u)] == u or u[: len(path)] == path for u in used)

    unused = sorted(".".join(p) for p in leaf_paths(load_values()) if not covered(p))
    assert not unused, f"values.yaml has values no template reads (misspelt?): {unused}"


# --- environment variables --------------------------------------------------------------------


def chart_settings() -> dict[str, set[str]]:
    """Names the ConfigMap and the Secret set (their data comes from _helpers.tpl)."""
    texts = template_text()
    config = set(ENV_KEY.findall(define_body("smartpark-fleet.configData")))
    secret = set(ENV_KEY.findall(define_body("smartpark-fleet.secretData")))
    for name in ("configmap.yaml", "secret.yaml", "migrations-job.yaml"):
        found = set(ENV_KEY.findall(texts[name]))
        (secret if name == "secret.yaml" else config).update(found)
    return {"config": config, "secret": secret}


def test_settings_file_is_parsed():
    read = settings_read()
    assert {"SECRET_KEY", "DATABASE_URL", "DEBUG"} <= read, "settings.py no longer reads env via get_*(...)"


def test_configmap_and_secret_set_only_settings_the_platform_reads():
    read = settings_read()
    names = chart_settings()
    assert len(names["config"]) >= 10 and len(names["secret"]) == 4, names
    unknown = sorted((names["config"] | names["secret"]) - read)
    assert not unknown, f"the chart sets variables settings.py never reads: {unknown}"


def test_chart_sets_every_expected_setting_in_the_right_place():
    names = chart_settings()
    missing = EXPECTED_SETTINGS - (names["config"] | names["secret"])
    assert not missing, f"the chart does not set {sorted(missing)}"
    assert names["secret"] == SECRET_SETTINGS
    assert not names["config"] & SECRET_SETTINGS, "credentials belong in the Secret, not the ConfigMap"
    assert re.search(r'^DEBUG:\s*"0"\s*$', define_body("smartpark-fleet.configData"), re.MULTILINE)


def test_container_env_is_settings_or_process_env():
    read = settings_read()
    env = set()
    for text in template_text().values():
        env.update(ENV_NAME.findall(text))
    assert "POD_NAME" in env
    unknown = sorted(env - read - PROCESS_ENV)
    assert not unknown, f"containers get variables nothing reads: {unknown}"


# --- the platform's processes -----------------------------------------------------------------


def test_secret_is_required_unless_an_existing_secret_is_named():
    body = define_body("smartpark-fleet.secretData")
    assert re.search(r"SECRET_KEY:.*required .*\.Values\.secrets\.secretKey", body)
    secret = (TEMPLATES / "secret.yaml").read_text()
    assert "if not .Values.secrets.existingSecret" in secret


def test_processes_and_their_invariants():
    texts = template_text()
    web = texts["web-deployment.yaml"]
    assert "fleet_server.wsgi:application" in web and "0.0.0.0:8000" in web
    assert web.count("path: /healthz") == 2  # readiness and liveness
    assert "containerPort: 8000" in web
    assert "targetPort: http" in texts["service.yaml"]

    ingest = texts["ingest.yaml"]
    assert "mqtt_ingest" in ingest and "--client-id" in ingest and "$(POD_NAME)" in ingest
    assert "fieldPath: metadata.name" in ingest
    assert not re.search(r"^\s+ports:", ingest, re.MULTILINE), "nothing connects to ingest"

    worker = texts["worker-deployment.yaml"]
    assert re.search(r"- celery\s+- --workdir\s+- platform\s+- -A\s+- fleet_server\s+- worker", worker)
    beat = texts["beat-deployment.yaml"]
    assert re.search(r"^\s+replicas: 1\s*$", beat, re.MULTILINE)
    assert "type: Recreate" in beat and "/tmp/celerybeat-schedule" in beat
    assert ".Values.beat.replicas" not in beat

    job = texts["migrations-job.yaml"]
    assert "pre-install,pre-upgrade" in job
    assert '"migrate", "--noinput"' in job and '"collectstatic", "--noinput"' in job

    for name in ("web-deployment.yaml", "ingest.yaml", "worker-deployment.yaml", "beat-deployment.yaml"):
        assert 'include "smartpark-fleet.podAnnotations"' in texts[name], name
        assert 'include "smartpark-fleet.envFrom"' in texts[name], name
        assert 'include "smartpark-fleet.volumeMounts"' in texts[name], name
    long_running = ("web-deployment.yaml", "ingest.yaml", "blob-server.yaml")
    long_running += ("worker-deployment.yaml", "beat-deployment.yaml")
    for name in long_running:
        assert 'include "smartpark-fleet.podCommon"' in texts[name], name
        assert 'include "smartpark-fleet.processEnv"' in texts[name], name
        assert 'include "smartpark-fleet.volumes"' in texts[name], name
        assert "toYaml .Values.securityContext" in texts[name], name
    assert "checksum/config:" in define_body("smartpark-fleet.podAnnotations")
    assert "mountPath: /tmp" in define_body("smartpark-fleet.volumeMounts")


def test_notes_tell_how_to_create_the_first_admin_and_an_api_key():
    notes = (TEMPLATES / "NOTES.txt").read_text()
    assert "python manage.py createsuperuser" in notes
    assert "python manage.py create_api_key <tenant-slug> --name" in notes
    assert re.search(r"exec -it deploy/\{\{ \$web \}\}", notes)


# --- the blob server --------------------------------------------------------------------------


def test_blob_server_is_a_deployment_like_ingest():
    text = (TEMPLATES / "blob-server.yaml").read_text()
    assert text.lstrip().startswith("{{- if .Values.blobServer.enabled }}"), "blobServer.enabled must gate it"
    assert re.search(r"^kind: Deployment\s*$", text, re.MULTILINE)
    assert '"component" "blob-server"' in text
    assert re.search(r"- python\s+- manage.py\s+- blob_server\s+- --client-id\s+- .*\$\(POD_NAME\)", text)
    assert ".Values.blobServer.clientIdPrefix" in text
    assert "fieldPath: metadata.name" in text
    assert not re.search(r"^\s+ports:", text, re.MULTILINE), "nothing connects to the blob server"
    assert not re.search(r"^\s+(readiness|startup)Probe:", text, re.MULTILINE)
    assert "with .Values.blobServer.livenessProbe" in text
    assert "toYaml .Values.blobServer.resources" in text
    fixed_replicas = r"if not .Values.blobServer.autoscaling.enabled \}\}\s+replicas: \{\{ .Values.blobServer.replicas"
    assert re.search(fixed_replicas, text), "replicas only while the autoscaler does not own them"
    for name in ("podAnnotations", "envFrom"):
        assert f'include "smartpark-fleet.{name}"' in text, name


def test_blob_server_mounts_the_blob_volume_read_only():
    text = (TEMPLATES / "blob-server.yaml").read_text()
    mounts = re.search(r"volumeMounts:\n(.*?)\n\s*volumes:", text, re.DOTALL)
    assert mounts, "no volumeMounts"
    entries = {}
    for entry in re.split(r"\n\s*- ", "\n" + mounts.group(1))[1:]:
        fields = dict(re.findall(r"(\w+):\s*(.+)", entry))
        entries[fields["name"]] = fields
    assert entries["tmp"]["mountPath"] == "/tmp"
    assert entries["data"]["mountPath"] == "{{ .Values.config.dataDir }}", "the blob store lives under FLEET_DATA_DIR"
    assert entries["data"].get("readOnly") == "true", "the blob server only reads blobs"
    # The same claim web and worker write: the chart's volume helper, and a ReadWriteMany default.
    volumes = define_body("smartpark-fleet.volumes")
    assert "persistentVolumeClaim:" in volumes and "- name: data" in volumes
    assert load_values()["persistence"]["accessModes"] == ["ReadWriteMany"]
    assert "toYaml .Values.persistence.accessModes" in (TEMPLATES / "pvc.yaml").read_text()


def test_blob_server_settings_come_from_values():
    body = define_body("smartpark-fleet.configData")
    for name, key in (
        ("DEPLOY_COMMAND_TTL_S", "deployCommandTtlS"),
        ("BLOB_CHUNK_BYTES", "blobChunkBytes"),
        ("BLOB_WINDOW_PER_DEVICE", "blobWindowPerDevice"),
        ("BLOB_MAX_INFLIGHT", "blobMaxInflight"),
    ):
        line = rf"^{name}: \{{\{{ .Values.config.{key} \| toString \| quote \}}\}}$"
        assert re.search(line, body, re.MULTILINE), name
    validate = define_body("smartpark-fleet.validate")
    for name in ("DEPLOY_COMMAND_TTL_S", "BLOB_CHUNK_BYTES", "BLOB_WINDOW_PER_DEVICE", "BLOB_MAX_INFLIGHT"):
        assert f'"{name}"' in validate, f"config.extra may override {name}"
    assert "blobServer.replicas" in validate and "mqttSharedGroup" in validate
    assert "262144" in validate and "1024" in validate


def test_blob_server_pdb_and_hpa():
    pdb = (TEMPLATES / "pdb.yaml").read_text()
    assert "and .Values.blobServer.enabled .Values.blobServer.podDisruptionBudget.enabled" in pdb
    assert '"component" "blob-server"' in pdb
    assert ".Values.blobServer.podDisruptionBudget.maxUnavailable" in pdb
    hpa = (TEMPLATES / "hpa.yaml").read_text()
    assert re.search(r'range \$key := list "web" "worker" "blobServer"', hpa)
    assert '(dig "enabled" true $values)' in hpa, "a disabled blob server must get no HPA"
    assert "(kebabcase $key)" in hpa  # blobServer -> blob-server, the Deployment's component name


def test_notes_and_docs_list_the_blob_server():
    notes = (TEMPLATES / "NOTES.txt").read_text()
    assert '"component" "blob-server"' in notes
    assert "app.kubernetes.io/component=blob-server" in notes
    assert "if not .Values.persistence.enabled" in notes
    readme = (CHART / "README.md").read_text()
    assert "manage.py blob_server --client-id $(POD_NAME)" in readme
    for key in ("blobServer.enabled", "blobServer.replicas", "config.blobChunkBytes"):
        assert f"`{key}`" in readme, key
    operations = (REPO / "docs" / "operations.md").read_text()
    kubernetes = operations.split("## Kubernetes", 1)[1].split("\n## ", 1)[0]
    assert "blob-server" in kubernetes and "ReadWriteMany" in kubernetes
