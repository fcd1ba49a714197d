{{/* The chart's name, cut to 63 characters (a DNS label). */}}
{{- define "mlcycle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name, with the chart's unless it holds it. */}}
{{- define "mlcycle.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "mlcycle.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mlcycle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlcycle
{{- end }}

{{/* Selector labels; each part adds app.kubernetes.io/component. */}}
{{- define "mlcycle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlcycle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The mlcycle image. */}}
{{- define "mlcycle.image" -}}
{{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The pod's security context: the restricted Pod Security Standard. */}}
{{- define "mlcycle.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Each container's security context: restricted, read-only root filesystem. */}}
{{- define "mlcycle.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* The tracking server's in-cluster URL. */}}
{{- define "mlcycle.trackingUri" -}}
{{ printf "http://%s-mlflow:5000" (include "mlcycle.fullname" .) }}
{{- end }}

{{/* Environment every mlcycle process shares: where state goes, the tracking server,
     listening on the pod's address, and the user's extra variables. */}}
{{- define "mlcycle.env" -}}
- name: MLCYCLE_WORKDIR
  value: /var/lib/mlcycle
- name: MLCYCLE_SERVING__HOST
  value: 0.0.0.0
- name: HOME
  value: /tmp
- name: BENTOML_HOME
  value: /tmp/bentoml
{{- if .Values.mlflow.enabled }}
- name: MLCYCLE_REGISTRY__TRACKING_URI
  value: {{ include "mlcycle.trackingUri" . }}
{{- include "mlcycle.mlflowLogin" . }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* With the evaluation store, mlcycle's processes (Ray's too) log in to MLflow as its
     generated admin. */}}
{{- define "mlcycle.mlflowLogin" -}}
{{- if and .Values.evaluation.enabled .Values.mlflow.enabled }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom: {secretKeyRef: {name: {{ include "mlcycle.fullname" . }}-evaluation, key: admin-username}}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "mlcycle.fullname" . }}-evaluation, key: admin-password}}
{{- end }}
{{- end }}

{{/* Volumes every mlcycle process mounts: its config, the shared work volume, /tmp. */}}
{{- define "mlcycle.volumes" -}}
- name: config
  configMap:
    name: {{ include "mlcycle.fullname" . }}-config
- name: shared
  persistentVolumeClaim:
    claimName: {{ include "mlcycle.fullname" . }}-shared
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "mlcycle.volumeMounts" -}}
- name: config
  mountPath: /etc/mlcycle
  readOnly: true
- name: shared
  mountPath: /var/lib/mlcycle
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* A Ray container's common part: writable /tmp only (Ray's session files), restricted. */}}
{{- define "mlcycle.rayContainer" -}}
imagePullPolicy: {{ .Values.image.pullPolicy }}
env:
  - name: HOME
    value: /tmp
  - name: RAY_USAGE_STATS_ENABLED
    value: "0"
  {{- include "mlcycle.mlflowLogin" . | nindent 2 }}
  {{- with .Values.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
securityContext:
  {{- include "mlcycle.containerSecurityContext" . | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/* checkov's findings this chart does not follow, each with its reason (checkov reads
     them from the object's annotations). */}}
{{- define "mlcycle.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_11=No CPU limits on purpose - they throttle a busy endpoint below its request; requests and memory limits are set
checkov.io/skip2: CKV_K8S_35=MLflow, SQLAlchemy and fsspec read credentials from the environment; the values come from Secrets by reference
checkov.io/skip3: CKV_K8S_43=The image is a value (image.tag); pin a digest there for production
checkov.io/skip4: CKV_K8S_15=The pull policy is a value (image.pullPolicy); with a pinned tag IfNotPresent is safe
{{- end }}
