{{/* The config file of each role (docs/configuration.md). Each pod mounts its own with
subPath and carries its checksum, so a change restarts only the pods it concerns.
HANGAR_* variables (the extraEnv values) override these keys. */}}

{{- define "hangar.config.controlPlane" -}}
metadata_dir = "/var/lib/hangar/meta"
rpc_bind_addr = "0.0.0.0:3901"
replication_factor = {{ int .Values.replicationFactor }}
{{ include "hangar.discoveryConfig" . }}
[layout]
auto_assign = {{ .Values.layout.autoAssign }}
{{- with .Values.layout.defaultZone }}
default_zone = {{ . | quote }}
{{- end }}
{{- with .Values.layout.defaultCapacity }}
default_capacity = {{ . | quote }}
{{- end }}
[admin]
api_bind_addr = "0.0.0.0:3903"
admin_token_file = "{{ include "hangar.secretDir" . }}/{{ .Values.secret.adminTokenKey }}"
{{ include "hangar.telemetryConfig" . }}
{{- end }}

{{- define "hangar.config.dataNode" -}}
metadata_dir = "/var/lib/hangar/meta"
data_dir = "/var/lib/hangar/data"
rpc_bind_addr = "0.0.0.0:3901"
{{ include "hangar.discoveryConfig" . }}
[admin]
api_bind_addr = "0.0.0.0:3903"
{{ include "hangar.telemetryConfig" . }}
{{- end }}

{{- define "hangar.config.frontend" -}}
{{ include "hangar.discoveryConfig" . }}
[s3_api]
api_bind_addr = "0.0.0.0:3900"
s3_region = {{ .Values.s3.region | quote }}
{{- with .Values.s3.rootDomain }}
root_domain = {{ . | quote }}
{{- end }}
[admin]
api_bind_addr = "0.0.0.0:3903"
{{ include "hangar.telemetryConfig" . }}
{{- end }}

{{/* The [admin] keys of traces and logs, the same in every role. */}}
{{- define "hangar.telemetryConfig" -}}
{{- with .Values.telemetry.traceSink }}
trace_sink = {{ . | quote }}
{{- end }}
trace_sample_ratio = {{ .Values.telemetry.traceSampleRatio | float64 | printf "%.4f" }}
log_format = {{ .Values.telemetry.logFormat | quote }}
{{- end }}
