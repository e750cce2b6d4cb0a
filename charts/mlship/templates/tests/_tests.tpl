{{/* A `helm test` pod running a Python check in one of the chart's images:
(dict "ctx" $ "name" "mlflow" "image" IMAGE "code" PYTHON "env" ENV_YAML) */}}
{{- define "mlship.testPod" -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ include "mlship.componentName" (dict "ctx" .ctx "component" (printf "test-%s" .name)) }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "mlship.labels" (dict "ctx" .ctx "component" (printf "test-%s" .name)) | nindent 4 }}
  annotations:
    helm.sh/hook: test
    # The last run's pod stays for `kubectl logs`; the next `helm test` replaces it.
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- include "mlship.imagePullSecrets" .ctx | nindent 2 }}
  securityContext:
    {{- include "mlship.podSecurityContext" (dict "uid" 10001) | nindent 4 }}
  containers:
    - name: test
      image: {{ .image | quote }}
      imagePullPolicy: {{ .ctx.Values.images.pullPolicy }}
      securityContext:
        {{- include "mlship.containerSecurityContext" (dict "uid" 10001) | nindent 8 }}
      command: [python, -c]
      args:
        - |
          {{- .code | trim | nindent 10 }}
      {{- with .env }}
      env:
        {{- . | nindent 8 }}
      {{- end }}
      resources:
        requests: {cpu: 10m, memory: 64Mi}
        limits: {memory: 256Mi}
{{- end -}}
