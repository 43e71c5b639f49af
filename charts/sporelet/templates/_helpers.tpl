{{/* Named templates of the sporelet chart: names, labels, images and the node installer's arguments. */}}

{{/* The chart name, or nameOverride. */}}
{{- define "sporelet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The base of every object name: fullnameOverride, else the release name (with the
chart name appended unless the release name already contains it). 63 characters
is the DNS label limit; "-operator" and "-node-cleanup" still fit in object names
because those are DNS subdomains (253).
*/}}
{{- define "sporelet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sporelet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select a component's pods; they never change across upgrades. Call with (dict "ctx" $ "component" "operator"). */}}
{{- define "sporelet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sporelet.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels. Call with (dict "ctx" $ "component" "operator"). */}}
{{- define "sporelet.labels" -}}
helm.sh/chart: {{ include "sporelet.chart" .ctx }}
{{ include "sporelet.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: sporelet
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* An image reference from {repository, tag}; the tag defaults to the chart's appVersion. Call with (dict "ctx" $ "image" .Values.node.image). */}}
{{- define "sporelet.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag -}}
{{- if hasPrefix "@" $tag -}}
{{- printf "%s%s" .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "sporelet.operator.fullname" -}}
{{- printf "%s-operator" (include "sporelet.fullname" .) -}}
{{- end -}}

{{- define "sporelet.node.fullname" -}}
{{- printf "%s-node" (include "sporelet.fullname" .) -}}
{{- end -}}

{{- define "sporelet.operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.operator.create -}}
{{- default (include "sporelet.operator.fullname" .) .Values.serviceAccount.operator.name -}}
{{- else -}}
{{- required "serviceAccount.operator.name is required when serviceAccount.operator.create is false" .Values.serviceAccount.operator.name -}}
{{- end -}}
{{- end -}}

{{- define "sporelet.node.serviceAccountName" -}}
{{- if .Values.serviceAccount.node.create -}}
{{- default (include "sporelet.node.fullname" .) .Values.serviceAccount.node.name -}}
{{- else -}}
{{- required "serviceAccount.node.name is required when serviceAccount.node.create is false" .Values.serviceAccount.node.name -}}
{{- end -}}
{{- end -}}

{{- define "sporelet.operator.leaseName" -}}
{{- default (include "sporelet.operator.fullname" .) .Values.operator.leaderElection.leaseName -}}
{{- end -}}

{{- define "sporelet.node.containerdConfig" -}}
{{- printf "%s/%s" (.Values.node.containerd.configDir | trimSuffix "/") .Values.node.containerd.configFile -}}
{{- end -}}

{{- define "sporelet.node.socket" -}}
{{- printf "%s/snapshotter.sock" (.Values.node.runDir | trimSuffix "/") -}}
{{- end -}}

{{/*
The arguments `sporelet-node install` and `sporelet-node uninstall` share (a YAML
list, one flow item per line). Host paths are mounted at the same paths in the
pod, so what the installer writes into containerd's configuration is valid on
the host. The node name comes from the NODE_NAME environment variable (downward
API): Kubernetes expands $(VAR) in container args but not in a preStop command.
*/}}
{{- define "sporelet.node.args" -}}
- --install-dir={{ .Values.node.installDir }}
- --shim-link-dir={{ .Values.node.shimLinkDir }}
- --containerd-config={{ include "sporelet.node.containerdConfig" . }}
- --snapshotter-socket={{ include "sporelet.node.socket" . }}
- --runtime-handler={{ .Values.runtimeClass.handler }}
- --node-label={{ .Values.node.label }}=true
- --log-level={{ .Values.node.logLevel }}
{{- if not .Values.node.containerd.restart }}
- --no-restart
{{- end }}
{{- end -}}

{{/* The snapshotter's configuration file (docs/snapshotter.md). */}}
{{- define "sporelet.node.snapshotterConfig" -}}
{{- $s := .Values.node.snapshotter -}}
{{- $data := .Values.node.dataDir | trimSuffix "/" -}}
root: {{ printf "%s/snapshotter" $data }}
address: {{ include "sporelet.node.socket" . }}
cache_dir: {{ printf "%s/cache" $data }}
log_level: {{ $s.logLevel | default "info" }}
pull_timeout_s: {{ $s.pullTimeoutSeconds | default 600 | int }}
{{- with $s.insecureRegistries }}
insecure_registries:
{{ toYaml . }}
{{- end }}
{{- if $s.registries }}
registries:
{{- range $host, $r := $s.registries }}
  {{ $host | toJson }}:
    {{- with $r.mirrors }}
    mirrors: {{ toJson . }}
    {{- end }}
    {{- if hasKey $r "insecure" }}
    insecure: {{ $r.insecure }}
    {{- end }}
    {{- with $r.username }}
    username: {{ . | toJson }}
    {{- end }}
    {{- with $r.password }}
    password: {{ . | toJson }}
    {{- end }}
{{- end }}
{{- end }}
{{- if and $s.cacheGC $s.cacheGC.enabled }}
cache_gc:
  interval_s: {{ $s.cacheGC.intervalSeconds | default 300 | int }}
  max_mib: {{ $s.cacheGC.maxMiB | default 0 | int }}
{{- end }}
{{- end -}}
