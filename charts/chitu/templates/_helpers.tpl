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

{{- define "chitu.configName" -}}
{{- printf "%s-config" (include "chitu.operatorName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The operator's configuration document (chitu_api.operatorconfig.OperatorConfig): values.yaml's jobDefaults as
they are (its sections are the document's: worker, model, output; "" and {} mean "not set"), with the worker
image defaulting to the chart's own version, and values.yaml's policy as its policy section.
*/}}
{{- define "chitu.operatorConfig" -}}
{{- $config := deepCopy .Values.jobDefaults -}}
{{- with .Values.policy }}{{ $_ := set $config "policy" (deepCopy .) }}{{ end -}}
{{- $worker := $config.worker | default dict -}}
{{- $_ := set $worker "image" ($worker.image | default (printf "ghcr.io/chitu/worker:%s" .Chart.AppVersion)) -}}
{{- $_ := set $config "worker" $worker -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The namespaces the operator serves, as a JSON list ([] = every namespace: the chart is cluster-scoped). */}}
{{- define "chitu.watchedNamespaces" -}}
{{- toJson (.Values.watchNamespaces | default list | uniq) -}}
{{- end -}}
