{{/*
Names, labels, images, security contexts, generated secrets and in-cluster URLs: every template
takes these from here, so one change applies everywhere.
*/}}

{{- define "mlship.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The object-name prefix: <release>-mlship, or <release> when it already contains the name. */}}
{{- define "mlship.fullname" -}}
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

{{/* Name of one component's objects: (dict "ctx" $ "component" "mlflow"). */}}
{{- define "mlship.componentName" -}}
{{- printf "%s-%s" (include "mlship.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels (immutable in Deployments): name, instance and component only. */}}
{{- define "mlship.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlship.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The standard labels of every object: (dict "ctx" $ "component" "mlflow"). */}}
{{- define "mlship.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mlship.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: mlship
{{- end -}}

{{/* An mlship image reference: (dict "ctx" $ "image" .Values.mlflow.image). */}}
{{- define "mlship.image" -}}
{{- $registry := .ctx.Values.images.registry | trimSuffix "/" -}}
{{- $tag := .image.tag | default .ctx.Values.images.tag -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" $registry .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "mlship.imagePullSecrets" -}}
{{- $secrets := list -}}
{{- range .Values.images.pullSecrets -}}
{{- $secrets = append $secrets (dict "name" .) -}}
{{- end -}}
{{- if $secrets }}
imagePullSecrets:{{ toYaml $secrets | nindent 2 }}
{{- else }}
imagePullSecrets: []
{{- end }}
{{- end -}}

{{/*
Pod and container security contexts of the PodSecurity "restricted" profile. mlship's images run
as uid 10001, PostgreSQL's as 999: (dict "uid" 10001).
*/}}
{{- define "mlship.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mlship.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
A secret value, base64-encoded for a Secret's `data`: the value set in values if any, else the one
already stored in the cluster (so `helm upgrade` keeps it), else a new random one.
(dict "ctx" $ "secret" NAME "key" KEY "value" FROM_VALUES "length" N "fernet" BOOL)
*/}}
{{- define "mlship.secretData" -}}
{{- if .value -}}
{{- .value | toString | b64enc -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else if .fernet -}}
{{- /* a Fernet key is the urlsafe base64 of 32 random bytes */ -}}
{{- randAlphaNum 32 | b64enc | replace "+" "-" | replace "/" "_" | b64enc -}}
{{- else -}}
{{- randAlphaNum (.length | default 32) | b64enc -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ---- Airflow ---- */}}

{{- define "mlship.airflow.secretName" -}}
{{- include "mlship.componentName" (dict "ctx" . "component" "airflow") -}}
{{- end -}}

{{- define "mlship.airflow.serviceAccountName" -}}
{{- include "mlship.componentName" (dict "ctx" . "component" "airflow") -}}
{{- end -}}

{{/* The step pods' ServiceAccount: the chart's own (no API rights, no token) unless one is named. */}}
{{- define "mlship.steps.serviceAccountName" -}}
{{- .Values.pipeline.serviceAccountName | default (include "mlship.componentName" (dict "ctx" . "component" "steps")) -}}
{{- end -}}

{{/* The Secret holding the alert webhook's URL: the user's, the chart's own when webhookUrl is set, else "". */}}
{{- define "mlship.alerts.secretName" -}}
{{- if .Values.alerts.existingSecret -}}
{{- .Values.alerts.existingSecret -}}
{{- else if .Values.alerts.webhookUrl -}}
{{- include "mlship.componentName" (dict "ctx" . "component" "alerts") -}}
{{- end -}}
{{- end -}}

{{- define "mlship.airflow.apiServerName" -}}
{{- include "mlship.componentName" (dict "ctx" . "component" "airflow-api-server") -}}
{{- end -}}

{{- define "mlship.airflow.apiServerURL" -}}
{{- printf "http://%s.%s.svc.%s:%v" (include "mlship.airflow.apiServerName" .) .Release.Namespace .Values.clusterDomain .Values.airflow.apiServer.service.port -}}
{{- end -}}

{{/* ---- MLflow ---- */}}

{{- define "mlship.mlflow.name" -}}
{{- include "mlship.componentName" (dict "ctx" . "component" "mlflow") -}}
{{- end -}}

{{/* The URL every in-cluster client (steps, operator, model servers) uses to reach MLflow. */}}
{{- define "mlship.mlflow.url" -}}
{{- printf "http://%s.%s.svc.%s:%v" (include "mlship.mlflow.name" .) .Release.Namespace .Values.clusterDomain .Values.mlflow.service.port -}}
{{- end -}}

{{/*
Host headers MLflow accepts: its Service under every in-cluster name, with and without the port,
localhost (kubectl port-forward), pod IPs are not needed (health checks are exempt), plus extras.
*/}}
{{- define "mlship.mlflow.allowedHosts" -}}
{{- $svc := include "mlship.mlflow.name" . -}}
{{- $ns := .Release.Namespace -}}
{{- $hosts := list -}}
{{- range $name := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns $.Values.clusterDomain) "localhost" "127.0.0.1" -}}
{{- $hosts = append $hosts $name -}}
{{- $hosts = append $hosts (printf "%s:*" $name) -}}
{{- end -}}
{{- concat $hosts .Values.mlflow.extraAllowedHosts | join "," -}}
{{- end -}}

{{/* ---- Database ---- */}}

{{- define "mlship.postgresql.name" -}}
{{- include "mlship.componentName" (dict "ctx" . "component" "postgresql") -}}
{{- end -}}

{{/* The Secret holding the airflow-password and mlflow-password keys. */}}
{{- define "mlship.database.secretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "mlship.postgresql.name" . -}}
{{- else if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecret -}}
{{- else -}}
{{- include "mlship.componentName" (dict "ctx" . "component" "external-database") -}}
{{- end -}}
{{- end -}}

{{/*
SQLAlchemy URL of one database: (dict "ctx" $ "db" "airflow"|"mlflow" "driver" "postgresql+psycopg2").
The password is $(MLSHIP_DB_PASSWORD): Kubernetes substitutes the container's env var of that name
(see mlship.database.passwordEnv), so the password never appears in a pod spec.
*/}}
{{- define "mlship.database.url" -}}
{{- $v := .ctx.Values -}}
{{- if $v.postgresql.enabled -}}
{{- printf "%s://%s:$(MLSHIP_DB_PASSWORD)@%s.%s.svc.%s:5432/%s" .driver .db (include "mlship.postgresql.name" .ctx) .ctx.Release.Namespace $v.clusterDomain .db -}}
{{- else -}}
{{- $db := index $v.externalDatabase .db -}}
{{- printf "%s://%s:$(MLSHIP_DB_PASSWORD)@%s:%v/%s" .driver $db.username $v.externalDatabase.host $v.externalDatabase.port $db.database -}}
{{- with $v.externalDatabase.sslmode }}?sslmode={{ . }}{{ end -}}
{{- end -}}
{{- end -}}

{{/* The env var the database URL refers to: (dict "ctx" $ "db" "airflow"|"mlflow"). */}}
{{- define "mlship.database.passwordEnv" -}}
- name: MLSHIP_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "mlship.database.secretName" .ctx }}
      key: {{ .db }}-password
{{- end -}}

{{/* ---- Kafka ---- */}}

{{- define "mlship.kafka.name" -}}
{{- include "mlship.componentName" (dict "ctx" . "component" "kafka") -}}
{{- end -}}

{{/* Where clients reach Kafka: the external cluster's servers, else the built-in broker's Service. */}}
{{- define "mlship.kafka.bootstrapServers" -}}
{{- if .Values.kafka.external.bootstrapServers -}}
{{- .Values.kafka.external.bootstrapServers -}}
{{- else -}}
{{- printf "%s.%s.svc.%s:9092" (include "mlship.kafka.name" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}
{{- end -}}

{{/*
The KRaft cluster id: a base64url UUID (22 characters, the last with its low 4 bits zero), stable
per release and namespace so that the broker always finds its formatted volume its own.
*/}}
{{- define "mlship.kafka.clusterId" -}}
{{- printf "%s/%s" .Release.Namespace .Release.Name | sha256sum | trunc 21 -}}A
{{- end -}}

{{/* ---- Operator ---- */}}

{{- define "mlship.operator.name" -}}
{{- include "mlship.componentName" (dict "ctx" . "component" "operator") -}}
{{- end -}}

{{/* Namespaces the operator serves (when not all): watchNamespaces, default the release's. */}}
{{- define "mlship.operator.namespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- .Values.operator.watchNamespaces | uniq | join "," -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* ---- Value checks: all problems reported at once ---- */}}
{{- define "mlship.validateValues" -}}
{{- $errors := list -}}
{{- if not .Values.postgresql.enabled -}}
{{- if not .Values.externalDatabase.host -}}
{{- $errors = append $errors "externalDatabase.host is required when postgresql.enabled=false" -}}
{{- end -}}
{{- if not .Values.externalDatabase.existingSecret -}}
{{- range $db := list "airflow" "mlflow" -}}
{{- if not (index $.Values.externalDatabase $db).password -}}
{{- $errors = append $errors (printf "externalDatabase.%s.password (or externalDatabase.existingSecret) is required when postgresql.enabled=false" $db) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.mlflow.artifacts.destination .Values.mlflow.artifacts.persistence.existingClaim -}}
{{- $errors = append $errors "mlflow.artifacts.destination and mlflow.artifacts.persistence.existingClaim exclude each other: artifacts go to one place" -}}
{{- end -}}
{{- if and .Values.operator.watchAllNamespaces .Values.operator.watchNamespaces -}}
{{- $errors = append $errors "operator.watchAllNamespaces=true and operator.watchNamespaces exclude each other" -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n\ninvalid values:\n  - %s\n" (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}
