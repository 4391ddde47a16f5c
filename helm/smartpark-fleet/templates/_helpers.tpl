{{/*
Expand the name of the chart.
*/}}
{{- define "smartpark-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "smartpark-fleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of one component's objects: "<fullname>-<component>", at most 52 characters (a StatefulSet's
pods add "-N" and its revision label a hash to the name, both within 63).
Usage: include "smartpark-fleet.componentName" (dict "root" . "component" "web")
*/}}
{{- define "smartpark-fleet.componentName" -}}
{{- printf "%s-%s" (include "smartpark-fleet.fullname" .root | trunc 44 | trimSuffix "-") .component }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "smartpark-fleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "smartpark-fleet.labels" -}}
helm.sh/chart: {{ include "smartpark-fleet.chart" . }}
{{ include "smartpark-fleet.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: smartpark-fleet
{{- end }}

{{/*
Selector labels
*/}}
{{- define "smartpark-fleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smartpark-fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels and selector labels of one component.
Usage: include "smartpark-fleet.componentLabels" (dict "root" . "component" "web")
*/}}
{{- define "smartpark-fleet.componentLabels" -}}
{{ include "smartpark-fleet.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "smartpark-fleet.componentSelectorLabels" -}}
{{ include "smartpark-fleet.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "smartpark-fleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "smartpark-fleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image.
*/}}
{{- define "smartpark-fleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
Name of the Secret the pods read SECRET_KEY, DATABASE_URL, MQTT_URL and CELERY_BROKER_URL from.
*/}}
{{- define "smartpark-fleet.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "smartpark-fleet.fullname" . }}
{{- end }}
{{- end }}

{{/*
ALLOWED_HOSTS as a list: config.allowedHosts, else the ingress hosts; rendering fails when empty.
Returned as a comma-separated string.
*/}}
{{- define "smartpark-fleet.allowedHosts" -}}
{{- $hosts := list }}
{{- range .Values.config.allowedHosts }}
{{- $hosts = append $hosts . }}
{{- end }}
{{- if and (not $hosts) .Values.ingress.enabled }}
{{- range .Values.ingress.hosts }}
{{- $hosts = append $hosts .host }}
{{- end }}
{{- end }}
{{- if not $hosts }}
{{- fail "config.allowedHosts is required (or enable the ingress with hosts): the platform runs with DEBUG=0 and refuses to start without ALLOWED_HOSTS" }}
{{- end }}
{{- join "," $hosts }}
{{- end }}

{{/*
Host header of the web probes: Django rejects a request whose Host is not in ALLOWED_HOSTS, and
the kubelet would send the pod's IP. A leading "." (a domain and its subdomains) is dropped, "*"
becomes localhost.
*/}}
{{- define "smartpark-fleet.probeHost" -}}
{{- if .Values.web.probeHost }}
{{- .Values.web.probeHost }}
{{- else }}
{{- $first := first (splitList "," (include "smartpark-fleet.allowedHosts" .)) }}
{{- if eq $first "*" }}
{{- "localhost" }}
{{- else }}
{{- trimPrefix "." $first }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The ConfigMap's data: the non-secret settings (platform/fleet_server/settings.py reads each).
*/}}
{{- define "smartpark-fleet.configData" -}}
DEBUG: "0"
ALLOWED_HOSTS: {{ include "smartpark-fleet.allowedHosts" . | quote }}
CSRF_TRUSTED_ORIGINS: {{ join "," .Values.config.csrfTrustedOrigins | quote }}
MQTT_PUBLIC_URL: {{ required "config.mqttPublicUrl is required: the broker address devices are told at enrollment (e.g. mqtts://mqtt.example.com:8883)" .Values.config.mqttPublicUrl | quote }}
MQTT_SHARED_GROUP: {{ .Values.config.mqttSharedGroup | toString | quote }}
LOG_LEVEL: {{ .Values.config.logLevel | quote }}
AGENT_KEEPALIVE_S: {{ .Values.config.agentKeepaliveS | toString | quote }}
AGENT_TELEMETRY_INTERVAL_S: {{ .Values.config.agentTelemetryIntervalS | toString | quote }}
DEVICE_OFFLINE_AFTER_S: {{ .Values.config.deviceOfflineAfterS | toString | quote }}
TELEMETRY_RETENTION_HOURS: {{ .Values.config.telemetryRetentionHours | toString | quote }}
DEPLOY_COMMAND_TTL_S: {{ .Values.config.deployCommandTtlS | toString | quote }}
BLOB_CHUNK_BYTES: {{ .Values.config.blobChunkBytes | toString | quote }}
BLOB_WINDOW_PER_DEVICE: {{ .Values.config.blobWindowPerDevice | toString | quote }}
BLOB_MAX_INFLIGHT: {{ .Values.config.blobMaxInflight | toString | quote }}
SECURE_SSL_REDIRECT: {{ ternary "1" "0" (has (.Values.config.secureSslRedirect | toString | lower) (list "true" "1" "yes" "on")) | quote }}
FLEET_DATA_DIR: {{ .Values.config.dataDir | quote }}
STATIC_ROOT: {{ .Values.config.staticRoot | quote }}
{{- range $name, $value := .Values.config.extra }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/*
The Secret's data (only when no existingSecret is given).
*/}}
{{- define "smartpark-fleet.secretData" -}}
SECRET_KEY: {{ required "secrets.secretKey is required (or set secrets.existingSecret)" .Values.secrets.secretKey | b64enc | quote }}
DATABASE_URL: {{ required "secrets.databaseUrl is required (or set secrets.existingSecret): postgres://user:pass@host:5432/db" .Values.secrets.databaseUrl | b64enc | quote }}
MQTT_URL: {{ required "secrets.mqttUrl is required (or set secrets.existingSecret): mqtt://user:pass@broker:1883" .Values.secrets.mqttUrl | b64enc | quote }}
CELERY_BROKER_URL: {{ required "secrets.celeryBrokerUrl is required (or set secrets.existingSecret): redis://host:6379/0" .Values.secrets.celeryBrokerUrl | b64enc | quote }}
{{- end }}

{{/*
Checks that span several values.
*/}}
{{- define "smartpark-fleet.validate" -}}
{{- if and (gt (int .Values.ingest.replicas) 1) (not .Values.config.mqttSharedGroup) }}
{{- fail "config.mqttSharedGroup must be set when ingest.replicas > 1: without a shared subscription every replica would ingest every message" }}
{{- end }}
{{- if and .Values.blobServer.enabled (not .Values.config.mqttSharedGroup) (or (gt (int .Values.blobServer.replicas) 1) .Values.blobServer.autoscaling.enabled) }}
{{- fail "config.mqttSharedGroup must be set when more than one blob server runs: without a shared subscription every replica would answer every chunk request" }}
{{- end }}
{{- $chunk := int .Values.config.blobChunkBytes }}
{{- if or (lt $chunk 1024) (gt $chunk 262144) }}
{{- fail "config.blobChunkBytes must be between 1024 and 262144 (fleet_protocol.MAX_CHUNK_BYTES)" }}
{{- end }}
{{- if not (has .Values.ingest.kind (list "StatefulSet" "Deployment")) }}
{{- fail "ingest.kind must be StatefulSet or Deployment" }}
{{- end }}
{{- $managed := list "DEBUG" "ALLOWED_HOSTS" "CSRF_TRUSTED_ORIGINS" "MQTT_PUBLIC_URL" "MQTT_SHARED_GROUP" "LOG_LEVEL" "AGENT_KEEPALIVE_S" "AGENT_TELEMETRY_INTERVAL_S" "DEVICE_OFFLINE_AFTER_S" "TELEMETRY_RETENTION_HOURS" "DEPLOY_COMMAND_TTL_S" "BLOB_CHUNK_BYTES" "BLOB_WINDOW_PER_DEVICE" "BLOB_MAX_INFLIGHT" "SECURE_SSL_REDIRECT" "FLEET_DATA_DIR" "STATIC_ROOT" "SECRET_KEY" "DATABASE_URL" "MQTT_URL" "CELERY_BROKER_URL" }}
{{- range $name, $_ := .Values.config.extra }}
{{- if has $name $managed }}
{{- fail (printf "config.extra.%s: the chart sets %s itself (its own value, or the Secret for credentials)" $name $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Pod annotations: restart the pods when the settings change, plus podAnnotations.
*/}}
{{- define "smartpark-fleet.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
envFrom of every platform container.
*/}}
{{- define "smartpark-fleet.envFrom" -}}
- configMapRef:
    name: {{ include "smartpark-fleet.fullname" . }}
- secretRef:
    name: {{ include "smartpark-fleet.secretName" . }}
{{- end }}

{{/*
Process-level environment of every platform container (not Django settings): a writable HOME
on the read-only root filesystem (gunicorn's control socket, celery).
*/}}
{{- define "smartpark-fleet.processEnv" -}}
- name: HOME
  value: /tmp
{{- end }}

{{/*
Pod-level fields shared by the long-running pods: service account, security, scheduling.
Usage: include "smartpark-fleet.podCommon" (dict "root" . "component" "web")
*/}}
{{- define "smartpark-fleet.podCommon" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
serviceAccountName: {{ include "smartpark-fleet.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automount }}
enableServiceLinks: false
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.topologySpreadConstraints }}
{{- /* each constraint's labelSelector defaults to the component's selector labels */}}
topologySpreadConstraints:
{{- range . }}
{{- $constraint := deepCopy . }}
{{- if not $constraint.labelSelector }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "smartpark-fleet.componentSelectorLabels" (dict "root" $root "component" $component) | fromYaml)) }}
{{- end }}
  - {{- toYaml $constraint | nindent 4 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Volumes of the long-running pods: /tmp and FLEET_DATA_DIR.
*/}}
{{- define "smartpark-fleet.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: data
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (include "smartpark-fleet.fullname" .) .Values.persistence.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}

{{- define "smartpark-fleet.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ .Values.config.dataDir }}
{{- end }}
