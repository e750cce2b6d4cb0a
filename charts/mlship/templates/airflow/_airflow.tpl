{{/* Pieces shared by every Airflow component's pod. */}}

{{/* airflow.cfg: the chart's settings, then airflow.config on top. */}}
{{- define "mlship.airflow.config" -}}
{{- $v := .Values.airflow -}}
{{- /* The DAG files are baked into the image and change only with a new pod, so the processor
re-parses them every 5 minutes instead of every 30 s (each parse imports the Kubernetes client). */ -}}
{{- $cfg := dict
  "core" (dict
    "executor" $v.executor
    "parallelism" $v.parallelism
    "dags_folder" "/opt/airflow/dags"
    "load_examples" "False"
    "dags_are_paused_at_creation" (ternary "True" "False" $v.dagsArePausedAtCreation)
    "auth_manager" "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    "execution_api_server_url" (printf "%s/execution/" (include "mlship.airflow.apiServerURL" .))
    "hostname_callable" "airflow.utils.net.get_host_ip_address")
  "logging" (dict
    "base_log_folder" "/opt/airflow/logs"
    "worker_log_server_port" 8793)
  "dag_processor" (dict
    "min_file_process_interval" 300)
  "scheduler" (dict
    "enable_health_check" "True"
    "scheduler_health_check_server_port" 8974)
  "api" (dict
    "port" 8080
    "workers" $v.apiServer.workers
    "expose_config" "False")
-}}
{{- $cfg = mergeOverwrite $cfg (deepCopy $v.config) -}}
{{- $lines := list -}}
{{- range $section := keys $cfg | sortAlpha -}}
{{- $lines = append $lines (printf "[%s]" $section) -}}
{{- $options := index $cfg $section -}}
{{- range $key := keys $options | sortAlpha -}}
{{- $lines = append $lines (printf "%s = %v" $key (index $options $key)) -}}
{{- end -}}
{{- $lines = append $lines "" -}}
{{- end -}}
{{- join "\n" $lines | trim -}}
{{- end -}}

{{/* Environment of every Airflow container: the secrets, the database URL and the DAG's settings. */}}
{{- define "mlship.airflow.env" -}}
{{- $secret := include "mlship.airflow.secretName" . -}}
{{ include "mlship.database.passwordEnv" (dict "ctx" . "db" "airflow") }}
- name: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
  value: {{ include "mlship.database.url" (dict "ctx" . "db" "airflow" "driver" "postgresql+psycopg2") | quote }}
- name: AIRFLOW__CORE__FERNET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: fernet-key
- name: AIRFLOW__API__SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: api-secret-key
- name: AIRFLOW__API_AUTH__JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: jwt-secret
# KubernetesPodOperator's connection: the in-cluster API, and the XCom sidecar's image.
- name: AIRFLOW_CONN_KUBERNETES_DEFAULT
  value: {{ dict "conn_type" "kubernetes" "extra" (dict "in_cluster" true "namespace" .Release.Namespace "xcom_sidecar_container_image" .Values.pipeline.xcomSidecarImage) | toJson | quote }}
# The DAGs' settings (dags/mlship_dagspec.py).
{{- range $step, $image := .Values.pipeline.images }}
- name: MLSHIP_IMAGE_{{ upper $step }}
  value: {{ include "mlship.image" (dict "ctx" $ "image" $image) | quote }}
{{- end }}
- name: MLSHIP_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: MLSHIP_MLFLOW_TRACKING_URI
  value: {{ include "mlship.mlflow.url" . | quote }}
- name: MLSHIP_EXPERIMENT
  value: {{ .Values.pipeline.experiment | quote }}
- name: MLSHIP_IMAGE_PULL_POLICY
  value: {{ .Values.images.pullPolicy | quote }}
- name: MLSHIP_IMAGE_PULL_SECRETS
  value: {{ join "," .Values.images.pullSecrets | quote }}
- name: MLSHIP_SERVICE_ACCOUNT
  value: {{ include "mlship.steps.serviceAccountName" . | quote }}
# The source steps' pods (ingest, score) read the sources' headers from this Secret, and their
# environment from the credentials Secret (the kubelet resolves both; Airflow gets names only).
- name: MLSHIP_SOURCE_HEADERS_SECRET
  value: {{ .Values.pipeline.sourceHeadersSecret | quote }}
- name: MLSHIP_SOURCE_HEADERS_SECRET_KEY
  value: {{ .Values.pipeline.sourceHeadersSecretKey | quote }}
- name: MLSHIP_SOURCE_CREDENTIALS_SECRET
  value: {{ .Values.pipeline.sourceCredentialsSecret | quote }}
# The register and drift pods read the alert webhook's URL from this Secret (alerts.*).
- name: MLSHIP_ALERT_WEBHOOK_SECRET
  value: {{ include "mlship.alerts.secretName" . | quote }}
- name: MLSHIP_ALERT_WEBHOOK_SECRET_KEY
  value: {{ ternary .Values.alerts.existingSecretKey "url" (ne .Values.alerts.existingSecret "") | quote }}
- name: MLSHIP_MLFLOW_UI_URL
  value: {{ .Values.alerts.mlflowUrl | quote }}
- name: MLSHIP_AIRFLOW_UI_URL
  value: {{ .Values.alerts.airflowUrl | quote }}
- name: MLSHIP_SCHEDULE
  value: {{ .Values.pipeline.schedule | quote }}
- name: MLSHIP_TASK_RETRIES
  value: {{ .Values.pipeline.retries | quote }}
- name: MLSHIP_RETRY_DELAY_SECONDS
  value: {{ .Values.pipeline.retryDelaySeconds | quote }}
- name: MLSHIP_POD_STARTUP_TIMEOUT_SECONDS
  value: {{ .Values.pipeline.podStartupTimeoutSeconds | quote }}
- name: MLSHIP_DEFAULT_DATASET
  value: {{ .Values.pipeline.defaultDataset | quote }}
- name: MLSHIP_DEFAULT_MODEL_NAME
  value: {{ .Values.pipeline.defaultModelName | quote }}
{{- with .Values.pipeline.stepResources }}
- name: MLSHIP_STEP_RESOURCES
  value: {{ toJson . | quote }}
{{- end }}
# The drift monitor's settings (dags/mlship_drift.py).
- name: MLSHIP_DRIFT_SCHEDULE
  value: {{ .Values.drift.schedule | quote }}
- name: MLSHIP_DRIFT_ALIAS
  value: {{ .Values.drift.alias | quote }}
- name: MLSHIP_DRIFT_WINDOW_MINUTES
  value: {{ .Values.drift.windowMinutes | quote }}
- name: MLSHIP_DRIFT_MIN_ROWS
  value: {{ .Values.drift.minRows | quote }}
- name: MLSHIP_DRIFT_THRESHOLD
  value: {{ .Values.drift.threshold | quote }}
- name: MLSHIP_INFERENCE_LOG_EXPERIMENT
  value: {{ .Values.drift.inferenceExperiment | quote }}
- name: MLSHIP_DRIFT_EXPERIMENT
  value: {{ .Values.drift.reportExperiment | quote }}
# The root filesystem is read-only; /tmp is an emptyDir.
- name: HOME
  value: /tmp
{{- end -}}

{{/* Pod-template annotations: roll the pods when their configuration changes. */}}
{{- define "mlship.airflow.podAnnotations" -}}
checksum/config: {{ include "mlship.airflow.config" . | sha256sum }}
{{- end -}}

{{/*
Init container of every long-running component: wait until the database answers and the migrate
Job has brought its schema to this Airflow version (instead of racing the migration).
*/}}
{{- define "mlship.airflow.waitForMigrations" -}}
{{- $ctx := .ctx -}}
- name: wait-for-migrations
  image: {{ include "mlship.image" (dict "ctx" $ctx "image" $ctx.Values.airflow.image) | quote }}
  imagePullPolicy: {{ $ctx.Values.images.pullPolicy }}
  securityContext:
    {{- include "mlship.containerSecurityContext" (dict "uid" 10001) | nindent 4 }}
  command: [sh, -c]
  args:
    - airflow db check --retry 90 --retry-delay 2 && exec airflow db check-migrations --migration-wait-timeout 600
  env:
    {{- include "mlship.airflow.env" $ctx | nindent 4 }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  volumeMounts:
    {{- include "mlship.airflow.volumeMounts" $ctx | nindent 4 }}
{{- end -}}

{{- define "mlship.airflow.volumeMounts" -}}
- name: config
  mountPath: /opt/airflow/airflow.cfg
  subPath: airflow.cfg
  readOnly: true
- name: logs
  mountPath: /opt/airflow/logs
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "mlship.airflow.volumes" -}}
- name: config
  configMap:
    name: {{ include "mlship.componentName" (dict "ctx" . "component" "airflow") }}
- name: logs
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}
