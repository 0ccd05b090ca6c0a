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
{{- $given := .Values.terminationGracePeriodSeconds -}}
{{- range $role := include "lookout.roles" . | fromJsonArray -}}
{{- $grace := include "lookout.gracePeriod" (dict "root" $ "role" $role) | int -}}
{{- if le $grace (int $.Values.shutdownMarginSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed shutdownMarginSeconds (%v): the worker needs time to flush" $grace $.Values.shutdownMarginSeconds) -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.sink.kind "bigquery" -}}
{{- $timeout := .Values.sink.bigquery.writeTimeoutSeconds | float64 -}}
{{- $engine := index (.Values.config | default dict) "engine" | default dict -}}
{{- $checkpoint := index $engine "checkpoint_seconds" | default 5 | float64 -}}
{{- $metrics := index (.Values.config | default dict) "metrics" | default dict -}}
{{- $stall := index $metrics "stall_seconds" | default 600 | float64 -}}
{{- range $role := include "lookout.roles" . | fromJsonArray -}}
{{- $tables := include "lookout.checkpointTables" $role | int -}}
{{- /* the worker's own rule (metrics.stall_seconds, `lookout config check`): a pod the chart renders must start */ -}}
{{- $needed := addf $checkpoint (mulf $tables $timeout) -}}
{{- if lt $stall $needed -}}
{{- fail (printf "config.metrics.stall_seconds (%v) must be at least engine.checkpoint_seconds + %d x sink.bigquery.writeTimeoutSeconds (%v + %d x %v = %v) for role %s: a checkpoint writes up to %d BigQuery tables in turn, each retrying for writeTimeoutSeconds, and /healthz fails (the liveness probe restarts the pod mid-write) once the main loop has not come round for stall_seconds; the worker would refuse to start" $stall $tables $checkpoint $tables $timeout $needed $role $tables) -}}
{{- end -}}
{{- $grace := include "lookout.bigqueryGrace" (dict "root" $ "role" $role) | int -}}
{{- if and (not (kindIs "invalid" $given)) (lt (int $given) $grace) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) is shorter than a final checkpoint of role %s can take on BigQuery: shutdownMarginSeconds + %d x sink.bigquery.writeTimeoutSeconds (%d + %d x %v, rounded up: %d), as %d tables are written in turn, each retrying for writeTimeoutSeconds; the kubelet would kill the worker mid-write. Raise it to at least %d, or leave it empty for that" $given $role $tables (int $.Values.shutdownMarginSeconds) $tables $timeout $grace $tables $grace) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.serviceAccount.gcpServiceAccount (not .Values.serviceAccount.create) -}}
{{- fail (printf "serviceAccount.gcpServiceAccount (%s) is set on the account the chart creates, but serviceAccount.create is false: annotate your own account %q with iam.gke.io/gcp-service-account instead, and leave gcpServiceAccount empty" .Values.serviceAccount.gcpServiceAccount (include "lookout.serviceAccountName" .)) -}}
{{- end -}}
{{- range .Values.extraVolumes -}}
{{- if has .name (list "config" "data" "tmp") -}}
{{- fail (printf "extraVolumes: the name %q is the chart's own volume; choose another" .name) -}}
{{- end -}}
{{- end -}}
{{- $alerting := index (.Values.config | default dict) "alerting" | default dict -}}
{{- if index $alerting "receivers" -}}
{{- fail "config.alerting.receivers: set the chart's receivers: instead, whose secrets come from Kubernetes Secrets by reference (config: is a ConfigMap, in plain text, and is given to every pod)" -}}
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
{{- $settings := .settings | default dict -}}
{{- if and (eq .kind "alertmanager") .secretRef -}}
{{- fail (printf "receivers: %s (alertmanager) takes url, or urlSecretRef for a URL kept in a Secret, not secretRef" .name) -}}
{{- end -}}
{{- if and (eq .kind "alertmanager") .url .urlSecretRef -}}
{{- fail (printf "receivers: %s (alertmanager): give url or urlSecretRef, not both" .name) -}}
{{- end -}}
{{- if and (eq .kind "pagerduty") .url -}}
{{- fail (printf "receivers: %s (pagerduty) takes its Events API URL as settings.url, or urlSecretRef from a Secret; secretRef is its routing key" .name) -}}
{{- end -}}
{{- if and (has .kind (list "slack" "webhook")) .url -}}
{{- fail (printf "receivers: %s (%s) takes its URL from secretRef, never inline" .name .kind) -}}
{{- end -}}
{{- if and (not (has .kind (list "alertmanager" "pagerduty"))) .urlSecretRef -}}
{{- fail (printf "receivers: %s (%s) has no urlSecretRef: its URL is secretRef (urlSecretRef is for kinds alertmanager and pagerduty)" .name .kind) -}}
{{- end -}}
{{- if and (ne .kind "webhook") .hmacSecretRef -}}
{{- fail (printf "receivers: %s (%s) has no HMAC secret; hmacSecretRef is for kind webhook" .name .kind) -}}
{{- end -}}
{{- if and (not (has .kind (list "alertmanager" "webhook"))) (or .basicAuth .bearerTokenSecretRef) -}}
{{- fail (printf "receivers: %s (%s) sends no Authorization header; basicAuth and bearerTokenSecretRef are for kinds alertmanager and webhook" .name .kind) -}}
{{- end -}}
{{- if and .basicAuth .bearerTokenSecretRef -}}
{{- fail (printf "receivers: %s (%s): give basicAuth or bearerTokenSecretRef, not both (each is the Authorization header)" .name .kind) -}}
{{- end -}}
{{- $literal := .url | default (get $settings "url") | default "" -}}
{{- if regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@" (toString $literal) -}}
{{- fail (printf "receivers: %s (%s): the URL carries user:password@, a credential that would sit in a ConfigMap: give basicAuth (passwordSecretRef), or the whole URL as urlSecretRef" .name .kind) -}}
{{- end -}}
{{- $receiver := . -}}
{{- range $key, $instead := dict "webhook_url" "secretRef" "routing_key" "secretRef" "hmac_secret" "hmacSecretRef" "basic_auth" "basicAuth" "bearer_token" "bearerTokenSecretRef" -}}
{{- if hasKey $settings $key -}}
{{- fail (printf "receivers: %s (%s): settings.%s: credentials never go in settings, where they would sit in a ConfigMap; give %s (an existing Secret's name and key) instead" $receiver.name $receiver.kind $key $instead) -}}
{{- end -}}
{{- end -}}
{{- if hasKey $settings "url" -}}
{{- if eq .kind "alertmanager" -}}
{{- fail (printf "receivers: %s (alertmanager): give its URL as url (or urlSecretRef), not settings.url" .name) -}}
{{- else if ne .kind "pagerduty" -}}
{{- fail (printf "receivers: %s (%s): its URL is secretRef, not settings.url" .name .kind) -}}
{{- else if .urlSecretRef -}}
{{- fail (printf "receivers: %s (pagerduty): give settings.url or urlSecretRef, not both" .name) -}}
{{- end -}}
{{- end -}}
{{- if and $.Values.networkPolicy.enabled (eq .kind "alertmanager") .urlSecretRef (not .egressPort) -}}
{{- fail (printf "receivers: %s (alertmanager): its URL is in a Secret, so the chart cannot read the port the NetworkPolicy must open: set egressPort (and egressTo)" .name) -}}
{{- end -}}
{{- end -}}
{{- /* two receivers' secrets under one variable would send one receiver's secret to the other */ -}}
{{- $vars := dict -}}
{{- range include "lookout.receiverSecrets" . | fromJsonArray -}}
{{- $where := printf "%s %s" .receiver .field -}}
{{- if hasKey $vars .env -}}
{{- fail (printf "receivers: %s and %s would share the environment variable %s (the chart upper-cases receiver names and turns every run of other characters than letters and digits into _): rename one of the receivers" (get $vars .env) $where .env) -}}
{{- end -}}
{{- $_ := set $vars .env $where -}}
{{- end -}}
{{- range .Values.extraEnv -}}
{{- if and (kindIs "map" .) (hasKey $vars (toString .name)) -}}
{{- fail (printf "extraEnv: %s is the variable the chart sets to the Secret of receiver %s; it would replace that secret" .name (get $vars .name)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* BigQuery tables one checkpoint of a role writes in turn (schemas/config.py BIGQUERY_CHECKPOINT_TABLES). */}}
{{- define "lookout.checkpointTables" -}}
{{- if eq . "all" -}}8{{- else -}}4{{- end -}}
{{- end -}}

{{/* A final checkpoint's worst case on BigQuery, in whole seconds: margin + tables x write timeout. */}}
{{- define "lookout.bigqueryGrace" -}}
{{- $v := .root.Values -}}
{{- $tables := include "lookout.checkpointTables" .role | float64 -}}
{{- addf (int $v.shutdownMarginSeconds) (mulf $tables ($v.sink.bigquery.writeTimeoutSeconds | float64)) | ceil | int -}}
{{- end -}}

{{/* The startup probe's failureThreshold: the value given, else 60 periods, or on BigQuery
enough periods to outlast the start-up schema check (writeTimeoutSeconds + 30 s), after which
an unreachable BigQuery is one line in the log instead of a probe kill without one. */}}
{{- define "lookout.startupFailureThreshold" -}}
{{- $v := .Values -}}
{{- $period := $v.probes.startup.periodSeconds | float64 -}}
{{- $needed := 0 -}}
{{- if eq $v.sink.kind "bigquery" -}}
{{- $needed = divf (addf ($v.sink.bigquery.writeTimeoutSeconds | float64) 30) $period | ceil | int -}}
{{- end -}}
{{- $given := $v.probes.startup.failureThreshold -}}
{{- if kindIs "invalid" $given -}}
{{- max 60 $needed -}}
{{- else if lt (int $given) $needed -}}
{{- fail (printf "probes.startup: periodSeconds x failureThreshold (%v s x %v) is shorter than the start-up check of an unreachable BigQuery takes to say so: sink.bigquery.writeTimeoutSeconds + 30 s (%v s); the probe would restart the pod before its reason reaches the log. Raise failureThreshold to at least %d, or leave it empty for that" $v.probes.startup.periodSeconds $given (addf ($v.sink.bigquery.writeTimeoutSeconds | float64) 30) $needed) -}}
{{- else -}}
{{- int $given -}}
{{- end -}}
{{- end -}}

{{/* terminationGracePeriodSeconds of a role's pods: the value given, else 30 s (DuckDB) or a
final checkpoint's worst case on BigQuery (validated in lookout.validate). */}}
{{- define "lookout.gracePeriod" -}}
{{- $v := .root.Values -}}
{{- if not (kindIs "invalid" $v.terminationGracePeriodSeconds) -}}
{{- int $v.terminationGracePeriodSeconds -}}
{{- else if eq $v.sink.kind "bigquery" -}}
{{- include "lookout.bigqueryGrace" . -}}
{{- else -}}
30
{{- end -}}
{{- end -}}

{{/* The environment variable carrying one receiver secret: LOOKOUT_SECRET_<NAME>_<FIELD>. */}}
{{- define "lookout.secretEnvName" -}}
{{- printf "LOOKOUT_SECRET_%s_%s" (regexReplaceAll "[^A-Za-z0-9]+" .receiver "_") (regexReplaceAll "[^A-Za-z0-9]+" .field "_") | upper -}}
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
{{- /* alertmanager and pagerduty: the URL itself from a Secret */ -}}
{{- if and .urlSecretRef (has .kind (list "alertmanager" "pagerduty")) -}}
{{- $fields = append $fields (list "url" .urlSecretRef) -}}
{{- end -}}
{{- /* alertmanager and webhook: the Authorization header's credential */ -}}
{{- if has .kind (list "alertmanager" "webhook") -}}
{{- if .basicAuth -}}{{- $fields = append $fields (list "basic_auth.password" .basicAuth.passwordSecretRef) -}}{{- end -}}
{{- if .bearerTokenSecretRef -}}{{- $fields = append $fields (list "bearer_token" .bearerTokenSecretRef) -}}{{- end -}}
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
{{- if not (kindIs "invalid" $v.sink.duckdb.retentionDays) -}}
{{- $_ := set (index $cfg "sink") "retention_days" $v.sink.duckdb.retentionDays -}}
{{- end -}}
{{- end -}}
{{- $engine := deepCopy (index $cfg "engine" | default dict) -}}
{{- $_ := set $engine "role" .role -}}
{{- $_ := set $engine "grace_period_seconds" (sub (include "lookout.gracePeriod" . | int) (int $v.shutdownMarginSeconds)) -}}
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
{{- if and (eq .kind "alertmanager") .url -}}{{- $_ := set $r "url" .url -}}{{- end -}}
{{- $name := .name -}}
{{- $username := dig "basicAuth" "username" "" . -}}
{{- range $secrets -}}
{{- if eq .receiver $name -}}
{{- if eq .field "basic_auth.password" -}}
{{- $_ := set $r "basic_auth" (dict "username" $username "password" (dict "env" .env)) -}}
{{- else -}}
{{- $_ := set $r .field (dict "env" .env) -}}
{{- end -}}
{{- end -}}
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

{{/*
The subscription-backlog alert: Cloud Monitoring's num_undelivered_messages under the name the
metrics pipeline gives it (stackdriver_exporter's with the Prometheus Operator, Managed Service
for Prometheus's own), for the PrometheusRule or a GlobalRules. Takes root, metric and extra
(more label matchers, from ", ").
*/}}
{{- define "lookout.backlogAlert" -}}
{{- $r := .root.Values.prometheusRule -}}
{{- $match := printf "%s=%q%s" $r.backlog.subscriptionLabel .root.Values.source.pubsub.subscription .extra -}}
- alert: LookoutBacklogGrowing
  # not a Lookout metric: Cloud Monitoring's num_undelivered_messages
  expr: |
    deriv({{ .metric }}{ {{- $match -}} }[{{ $r.backlog.window }}]) > 0
      and {{ .metric }}{ {{- $match -}} } > {{ $r.backlog.minMessages }}
  for: {{ $r.backlog.window }}
  labels: {severity: warning}
  annotations:
    summary: "The subscription's backlog grows: {{ "{{" }} $value | humanize {{ "}}" }} messages/s."
    description: Ingest cannot keep up; add replicas (ingest.autoscaling / keda.maxReplicaCount) or look for slow checkpoints.
    runbook_url: {{ $r.runbookBaseUrl }}#lookoutbackloggrowing
{{- end -}}

{{/* Ingest scales out (a Deployment); the one-replica roles that judge, page and write a DuckDB
file are a StatefulSet, which never runs two of its pod at once. */}}
{{- define "lookout.workloadKind" -}}
{{- if eq . "ingest" }}Deployment{{ else }}StatefulSet{{ end -}}
{{- end }}

{{/* A role's workload name. A StatefulSet's pods carry controller-revision-hash=<name>-<hash>
(11 more characters) and a label value is at most 63, so its name is cut to 52: a longer one
gets no pod at all. The PVC and the other objects keep the full name (an upgrade keeps them). */}}
{{- define "lookout.workloadName" -}}
{{- $name := printf "%s-%s" (include "lookout.fullname" .root) .role -}}
{{- if eq (include "lookout.workloadKind" .role) "StatefulSet" -}}
{{- $name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name -}}
{{- end -}}
{{- end }}
