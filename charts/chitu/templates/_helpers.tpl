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
The operator's configuration document (chitu_api's OperatorConfig): the platform defaults of every
GenerationJob, with unset values ("" or {}) left out so the built-in defaults of the spec apply.
*/}}
{{- define "chitu.operatorConfig" -}}
{{- $in := .Values.jobDefaults -}}
{{- $worker := dict "image" ($in.worker.image | default (printf "ghcr.io/chitu/worker:%s" .Chart.AppVersion)) -}}
{{- with $in.worker.imagePullPolicy }}{{ $_ := set $worker "imagePullPolicy" . }}{{ end -}}
{{- with $in.worker.resources }}{{ $_ := set $worker "resources" . }}{{ end -}}
{{- $model := dict -}}
{{- with $in.model.volume }}{{ $_ := set $model "volume" . }}{{ end -}}
{{- with $in.model.mountPath }}{{ $_ := set $model "mountPath" . }}{{ end -}}
{{- $output := dict -}}
{{- range $key := list "uri" "endpoint" "region" }}
{{- with (get $in.output $key) }}{{ $_ := set $output $key . }}{{ end -}}
{{- end -}}
{{- with $in.output.credentialsSecretRef }}{{ if .name }}{{ $_ := set $output "credentialsSecretRef" . }}{{ end }}{{ end -}}
{{- $defaults := dict "worker" $worker -}}
{{- if $model }}{{ $_ := set $defaults "model" $model }}{{ end -}}
{{- if $output }}{{ $_ := set $defaults "output" $output }}{{ end -}}
{{- dict "jobDefaults" $defaults | toYaml -}}
{{- end -}}
