{{/*
Object names are fixed, not derived from the release name: the DeviceClasses, admission policies and the
ClusterRole are cluster-wide and the driver name is unique, so one installation per cluster is all there can
be; the admission policy names the ServiceAccount.
*/}}
{{- define "pdp.name" -}}power-dev-plugin{{- end }}

{{/* Labels of every object's metadata: the kustomize overlays' labels plus Helm's own. */}}
{{- define "pdp.labels" -}}
app.kubernetes.io/name: power-dev-plugin
app.kubernetes.io/part-of: power-dev-plugin
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The mode's needs. */}}
{{- define "pdp.dra" -}}{{ if or (eq .Values.mode "dra") (eq .Values.mode "auto") }}true{{ end }}{{- end }}
{{- define "pdp.devicePlugin" -}}{{ if or (eq .Values.mode "device-plugin") (eq .Values.mode "auto") }}true{{ end }}{{- end }}

{{- define "pdp.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
