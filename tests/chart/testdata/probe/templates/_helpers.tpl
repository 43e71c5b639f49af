{{/* Never rendered on its own. */}}
{{- define "probe.name" -}}{{ .Chart.Name }}-{{ .Release.Name }}{{- end -}}
