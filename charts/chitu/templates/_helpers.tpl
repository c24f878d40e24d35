{{/* Names and labels shared by the templates. */}}

{{- define "chitu.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "chitu.operatorName" -}}
{{- printf "%s-operator" (include "chitu.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "chitu.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "chitu.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "chitu.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: chitu
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "chitu.selectorLabels" -}}
app.kubernetes.io/name: chitu-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
