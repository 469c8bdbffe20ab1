{{/* The chart's name, overridable. */}}
{{- define "hangar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource's name: `<release>-<chart>`, or the release alone when it
already contains the chart's name. 40 characters at most, so that with a suffix such as
`-control` a StatefulSet's name stays within 52 (its pods' controller-revision-hash label
adds 11 characters to it and must stay within 63). */}}
{{- define "hangar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hangar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "hangar.labels" -}}
helm.sh/chart: {{ include "hangar.chart" . }}
{{ include "hangar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hangar
{{- end }}

{{/* Labels that select the release's pods (a component label is added per role). */}}
{{- define "hangar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hangar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hangar.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "hangar.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "hangar.imageTag" .) }}
{{- end }}

{{- define "hangar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hangar.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the rpc secret and the admin token. */}}
{{- define "hangar.secretName" -}}
{{- default (printf "%s-secrets" (include "hangar.fullname" .)) .Values.secret.existingSecret }}
{{- end }}

{{/* The `hangar.dev/service` label of this cluster's HangarNode resources. */}}
{{- define "hangar.discoveryService" -}}
{{- default (include "hangar.fullname" .) .Values.kubernetes.serviceName }}
{{- end }}

{{/* Where the Secret's files are mounted. */}}
{{- define "hangar.secretDir" -}}/run/secrets/hangar{{- end }}

{{/* The discovery keys every process's config starts with. */}}
{{- define "hangar.discoveryConfig" -}}
rpc_secret_file = "{{ include "hangar.secretDir" . }}/{{ .Values.secret.rpcSecretKey }}"
kubernetes_namespace = {{ .Release.Namespace | quote }}
kubernetes_service_name = {{ include "hangar.discoveryService" . | quote }}
kubernetes_skip_crd = {{ .Values.kubernetes.skipCrd }}
{{- end }}

{{/* The environment every process needs for discovery: its pod (the owner reference of
its HangarNode) and the address it announces. Argument: (list $ port) for a Deployment's
pods, which announce `$(POD_IP):<port>`; (list $ port headlessService) for a StatefulSet's,
which announce their stable DNS name
`$(POD_NAME).<headlessService>.$(POD_NAMESPACE).svc.<clusterDomain>:<port>`.
Why the name: a pod's IP changes when it is rescheduled, while Hangar recognises a data node
that lost its disks by the address it had (it takes its old node id back and rebuilds) and
the layout is dialled by address; a StatefulSet pod's DNS name (through its headless Service,
which publishes not-ready pods too) survives rescheduling. Kubernetes expands `$(VAR)` only
from variables defined earlier in the list, so the pod's fields come first. */}}
{{- define "hangar.discoveryEnv" -}}
{{- $ := index . 0 -}}
{{- $port := index . 1 -}}
{{- $headless := "" -}}
{{- if gt (len .) 2 }}{{ $headless = index . 2 }}{{ end -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- if $headless }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: HANGAR_RPC_PUBLIC_ADDR
  value: "$(POD_NAME).{{ $headless }}.$(POD_NAMESPACE).svc.{{ include "hangar.clusterDomain" $ }}:{{ $port }}"
{{- else }}
- name: HANGAR_RPC_PUBLIC_ADDR
  value: "$(POD_IP):{{ $port }}"
{{- end }}
- name: HANGAR_LOG
  value: {{ $.Values.logLevel | quote }}
{{- end }}

{{/* The cluster's DNS domain (`clusterDomain`), without a trailing dot. */}}
{{- define "hangar.clusterDomain" -}}
{{- $d := trimSuffix "." (trimPrefix "." (toString .Values.clusterDomain)) -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" $d) }}
{{- fail (printf "clusterDomain %q is not a DNS domain such as cluster.local" (toString .Values.clusterDomain)) }}
{{- end }}
{{- $d -}}
{{- end }}

{{/* Readiness, liveness and startup probes on the admin endpoint. */}}
{{- define "hangar.probes" -}}
startupProbe:
  httpGet:
    path: /live
    port: admin
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.startup.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
readinessProbe:
  httpGet:
    path: /ready
    port: admin
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
livenessProbe:
  httpGet:
    path: /live
    port: admin
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
{{- end }}

{{/* The config file (one key of the ConfigMap, mounted with subPath) and the Secret's
files. Argument: (list $ configKey withAdminToken). */}}
{{- define "hangar.configVolumes" -}}
{{- $ := index . 0 -}}
- name: config
  configMap:
    name: {{ include "hangar.fullname" $ }}-config
    items:
      - key: {{ index . 1 }}
        path: {{ index . 1 }}
- name: secrets
  secret:
    secretName: {{ include "hangar.secretName" $ }}
    defaultMode: 0440
    items:
      - key: {{ $.Values.secret.rpcSecretKey }}
        path: {{ $.Values.secret.rpcSecretKey }}
      {{- if index . 2 }}
      - key: {{ $.Values.secret.adminTokenKey }}
        path: {{ $.Values.secret.adminTokenKey }}
      {{- end }}
{{- end }}

{{- define "hangar.configMounts" -}}
- name: config
  mountPath: /etc/hangar/hangar.toml
  subPath: {{ index . 1 }}
  readOnly: true
- name: secrets
  mountPath: {{ include "hangar.secretDir" (index . 0) }}
  readOnly: true
{{- end }}

{{/* Pod-level settings shared by every role. */}}
{{- define "hangar.podCommon" -}}
serviceAccountName: {{ include "hangar.serviceAccountName" . }}
automountServiceAccountToken: true
{{- /* Service links would put variables such as HANGAR_S3_PORT, named after the
release's Services, in the environment, where HANGAR_* variables are config keys. */}}
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
