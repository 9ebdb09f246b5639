{{/* Chart name. */}}
{{- define "mirrorscope.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix of every resource. */}}
{{- define "mirrorscope.fullname" -}}
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

{{/* Name of a component's resources: <fullname>-<component>. Call with (dict "root" $ "component" "worker"). */}}
{{- define "mirrorscope.componentName" -}}
{{- printf "%s-%s" (include "mirrorscope.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mirrorscope.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "mirrorscope.labels" -}}
helm.sh/chart: {{ include "mirrorscope.chart" . }}
app.kubernetes.io/name: {{ include "mirrorscope.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mirrorscope
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of a component. Call with (dict "root" $ "component" "worker"). */}}
{{- define "mirrorscope.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mirrorscope.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of a component's resources. */}}
{{- define "mirrorscope.componentLabels" -}}
{{ include "mirrorscope.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mirrorscope.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mirrorscope.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: registry/repository:tag[@digest]. */}}
{{- define "mirrorscope.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- $ref := printf "%s/%s:%s" .Values.image.registry .Values.image.repository $tag }}
{{- if .Values.image.digest }}
{{- $ref = printf "%s@%s" $ref .Values.image.digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{/* A replica count capped at the partition count: more consumers than partitions would idle. Call with (dict "root" $ "replicas" N). */}}
{{- define "mirrorscope.capReplicas" -}}
{{- min (int .replicas) (int .root.Values.stream.partitions) }}
{{- end }}

{{/* Name of the Secret whose keys become environment variables ("" = none). */}}
{{- define "mirrorscope.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else if .Values.secret.create }}
{{- include "mirrorscope.fullname" . }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the state key (stateKey.existingSecret, or the chart's own). */}}
{{- define "mirrorscope.stateKeySecretName" -}}
{{- default (printf "%s-state-key" (include "mirrorscope.fullname" .)) .Values.stateKey.existingSecret }}
{{- end }}

{{/* Fail the render when the workers would have no state key: they refuse to start without one. */}}
{{- define "mirrorscope.requireStateKey" -}}
{{- $k := .Values.stateKey }}
{{- if not (or $k.existingSecret $k.value $k.generate) }}
{{- fail "stateKey: the workers need a key to sign their flow state in Redis. Set stateKey.generate=true (a random key, kept across upgrades), stateKey.value=<at most 64 bytes, e.g. $(head -c 32 /dev/urandom | base64)> or stateKey.existingSecret=<name> (docs/deploy.md, State key)" }}
{{- end }}
{{- end }}

{{/* The config file of every enabled workload, as YAML: component -> settings. */}}
{{- define "mirrorscope.componentConfigs" -}}
{{- $configs := dict }}
{{- if .Values.worker.enabled }}
{{- $_ := set $configs "worker" .Values.worker.config }}
{{- end }}
{{- range $name, $sink := .Values.sinks }}
{{- if and $sink.enabled (eq $.Values.stream.type "kafka") }}
{{- $_ := set $configs (printf "sink-%s" $name) $sink.config }}
{{- end }}
{{- end }}
{{- if .Values.collector.enabled }}
{{- $_ := set $configs "collector" .Values.collector.config }}
{{- end }}
{{- toYaml $configs }}
{{- end }}

{{/*
Annotations of a workload: checkov suppressions, each with its reason, present only while it applies.
  CKV_K8S_43  without image.digest the image is pulled by its release tag; a digest removes it.
  CKV_K8S_35  with a Secret its keys reach the container as MIRRORSCOPE_* environment variables,
              because that is how `mirrorscope` reads its settings (there is no file-based variant).
*/}}
{{- define "mirrorscope.workloadAnnotations" -}}
{{- $skips := list }}
{{- if not .Values.image.digest }}
{{- $skips = append $skips "CKV_K8S_43=The image is referenced by its release tag (the chart appVersion) until image.digest pins it" }}
{{- end }}
{{- if include "mirrorscope.secretName" . }}
{{- $skips = append $skips "CKV_K8S_35=mirrorscope reads its settings, secrets included, only from MIRRORSCOPE_* environment variables" }}
{{- end }}
{{- if $skips }}
annotations:
{{- range $i, $skip := $skips }}
  checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end }}
{{- end }}
{{- end }}
