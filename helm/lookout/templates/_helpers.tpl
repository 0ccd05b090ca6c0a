{{/* Names and labels. */}}
{{- define "lookout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lookout.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lookout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lookout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lookout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "lookout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "lookout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lookout.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lookout.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The roles this release runs: [all], or [ingest, evaluate] in split mode. */}}
{{- define "lookout.roles" -}}
{{- if eq .Values.mode "split" -}}
{{- list "ingest" "evaluate" | toJson -}}
{{- else -}}
{{- list "all" | toJson -}}
{{- end -}}
{{- end -}}

{{/* Cross-value rules JSON Schema cannot say with a readable message. */}}
{{- define "lookout.validate" -}}
{{- if and (eq .Values.mode "split") (ne .Values.sink.kind "bigquery") -}}
{{- fail "mode=split needs sink.kind=bigquery: a DuckDB file has one writer, and the ingest replicas and the evaluator must share the sink" -}}
{{- end -}}
{{- if and (eq .Values.mode "split") (ne .Values.source.kind "pubsub") -}}
{{- fail "mode=split needs source.kind=pubsub: replicas share one subscription" -}}
{{- end -}}
{{- if and .Values.keda.enabled (ne .Values.mode "split") -}}
{{- fail "keda.enabled scales the ingest Deployment: set mode=split" -}}
{{- end -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownMarginSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed shutdownMarginSeconds (%v): the worker needs time to flush" .Values.terminationGracePeriodSeconds .Values.shutdownMarginSeconds) -}}
{{- end -}}
{{- range $key := list "source" "sink" -}}
{{- if hasKey ($.Values.config | default dict) $key -}}
{{- fail (printf "config.%s: set the chart's %s: values instead (the chart renders that section)" $key $key) -}}
{{- end -}}
{{- end -}}
{{- $names := dict -}}
{{- range .Values.receivers -}}
{{- if hasKey $names .name -}}
{{- fail (printf "receivers: the name %q is used twice" .name) -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- if and (eq .kind "alertmanager") .secretRef -}}
{{- fail (printf "receivers: %s (alertmanager) takes url, not secretRef: its URL is not a secret" .name) -}}
{{- end -}}
{{- if and (ne .kind "alertmanager") .url -}}
{{- fail (printf "receivers: %s (%s) takes its URL from secretRef, never inline" .name .kind) -}}
{{- end -}}
{{- if and (ne .kind "webhook") .hmacSecretRef -}}
{{- fail (printf "receivers: %s (%s) has no HMAC secret; hmacSecretRef is for kind webhook" .name .kind) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The environment variable carrying one receiver secret: LOOKOUT_SECRET_<NAME>_<FIELD>. */}}
{{- define "lookout.secretEnvName" -}}
{{- printf "LOOKOUT_SECRET_%s_%s" (regexReplaceAll "[^A-Za-z0-9]+" .receiver "_") .field | upper -}}
{{- end -}}

{{/*
Every receiver secret as {env, secretRef}: the pod's secretKeyRef env vars and the config's
{env: NAME} references both come from this one list, so they cannot disagree.
*/}}
{{- define "lookout.receiverSecrets" -}}
{{- $out := list -}}
{{- range .Values.receivers -}}
{{- $fields := list -}}
{{- if eq .kind "slack" -}}{{- $fields = list (list "webhook_url" .secretRef) -}}{{- end -}}
{{- if eq .kind "pagerduty" -}}{{- $fields = list (list "routing_key" .secretRef) -}}{{- end -}}
{{- if eq .kind "webhook" -}}
{{- $fields = list (list "url" .secretRef) -}}
{{- if .hmacSecretRef -}}{{- $fields = append $fields (list "hmac_secret" .hmacSecretRef) -}}{{- end -}}
{{- end -}}
{{- $receiver := .name -}}
{{- range $fields -}}
{{- $env := include "lookout.secretEnvName" (dict "receiver" $receiver "field" (index . 0)) -}}
{{- $out = append $out (dict "receiver" $receiver "field" (index . 0) "env" $env "secretRef" (index . 1)) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Lookout's config file for one role (.role), in the shapes `lookout config check` reads. */}}
{{- define "lookout.config" -}}
{{- $v := .root.Values -}}
{{- $cfg := deepCopy ($v.config | default dict) -}}
{{- if eq $v.source.kind "pubsub" -}}
{{- $p := $v.source.pubsub -}}
{{- $src := dict "kind" "pubsub" "project" $p.project "subscription" $p.subscription "max_messages" $p.maxMessages "pull_max_messages" $p.pullMaxMessages "ack_deadline_seconds" $p.ackDeadlineSeconds -}}
{{- if $p.deadLetterTopic -}}{{- $_ := set $src "dead_letter_topic" $p.deadLetterTopic -}}{{- end -}}
{{- $_ := set $cfg "source" $src -}}
{{- else -}}
{{- $_ := set $cfg "source" (dict "kind" "file" "path" $v.source.file.path) -}}
{{- end -}}
{{- if eq $v.sink.kind "bigquery" -}}
{{- $b := $v.sink.bigquery -}}
{{- $_ := set $cfg "sink" (dict "kind" "bigquery" "project" $b.project "dataset" $b.dataset "location" $b.location "write_timeout_seconds" $b.writeTimeoutSeconds) -}}
{{- else -}}
{{- $_ := set $cfg "sink" (dict "kind" "duckdb" "path" $v.sink.duckdb.path "memory_limit" $v.sink.duckdb.memoryLimit) -}}
{{- end -}}
{{- $engine := deepCopy (index $cfg "engine" | default dict) -}}
{{- $_ := set $engine "role" .role -}}
{{- $_ := set $engine "grace_period_seconds" (sub (int $v.terminationGracePeriodSeconds) (int $v.shutdownMarginSeconds)) -}}
{{- $_ := set $cfg "engine" $engine -}}
{{- $metrics := deepCopy (index $cfg "metrics" | default dict) -}}
{{- $_ := set $metrics "enabled" true -}}
{{- $_ := set $metrics "host" "0.0.0.0" -}}
{{- $_ := set $metrics "port" (int $v.metrics.port) -}}
{{- $_ := set $cfg "metrics" $metrics -}}
{{- /* ingest never notifies: its pods get neither receivers nor their secrets */ -}}
{{- if and (ne .role "ingest") (or $v.receivers $v.routes) -}}
{{- $alerting := deepCopy (index $cfg "alerting" | default dict) -}}
{{- $secrets := include "lookout.receiverSecrets" .root | fromJsonArray -}}
{{- $receivers := list -}}
{{- range $v.receivers -}}
{{- $r := deepCopy (.settings | default dict) -}}
{{- $_ := set $r "name" .name -}}
{{- $_ := set $r "kind" .kind -}}
{{- if eq .kind "alertmanager" -}}{{- $_ := set $r "url" .url -}}{{- end -}}
{{- $name := .name -}}
{{- range $secrets -}}
{{- if eq .receiver $name -}}{{- $_ := set $r .field (dict "env" .env) -}}{{- end -}}
{{- end -}}
{{- $receivers = append $receivers $r -}}
{{- end -}}
{{- if $receivers -}}
{{- $_ := set $alerting "receivers" $receivers -}}
{{- /* undelivered notifications wait on the data volume (a PVC with persistence.enabled) */ -}}
{{- if not (hasKey $alerting "outbox_path") -}}
{{- $_ := set $alerting "outbox_path" "/var/lib/lookout/outbox.sqlite" -}}
{{- end -}}
{{- end -}}
{{- if $v.routes -}}{{- $_ := set $alerting "routes" $v.routes -}}{{- end -}}
{{- $_ := set $cfg "alerting" $alerting -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}
