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

{{/* The host directory sporelet-node installs the binaries into. */}}
{{- define "sporelet.node.binDir" -}}
{{- printf "%s/bin" (.Values.node.installDir | trimSuffix "/") -}}
{{- end -}}

{{/* Where the host's / is mounted in the node pod (the installer's --root). */}}
{{- define "sporelet.node.hostRoot" -}}
/host
{{- end -}}

{{/* The node pod's environment: its node's name (downward API) and the label key. */}}
{{- define "sporelet.node.env" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: SPORELET_NODE_LABEL
  value: {{ .Values.node.label | quote }}
- name: SPORELET_DISK_DIR
  value: {{ printf "%s/disks" (.Values.node.dataDir | trimSuffix "/") | quote }}
{{- end -}}

{{/* Where the node Secret (snapshotter.yaml, shim.yaml) is mounted in the node pod. */}}
{{- define "sporelet.node.configMount" -}}
/etc/sporelet
{{- end -}}

{{/*
The options `sporelet-node install` and `sporelet-node uninstall` share (a YAML
list, flag and value as separate items: they reach the installer as argv,
never through a shell). Every flag is one of node/cli/main.c's; the chart
tests parse its option table to keep it so.

--root is the host's / mounted at /host (read-write, HostToContainer) rather
than each host directory mounted at its own path: every host path below is
then resolved beneath the host's real /, so host symlinks (/etc/containerd ->
/data/containerd) resolve as on the node, and the directories the installer
creates (/opt/sporelet/bin, /etc/sporelet) are its own, recorded and removed
again on uninstall; with per-directory hostPath mounts kubelet would create
them (DirectoryOrCreate) and nothing would ever remove them. The paths are
host paths and are written verbatim into containerd's configuration.
*/}}
{{- define "sporelet.node.args" -}}
{{- $n := .Values.node -}}
- --root
- {{ include "sporelet.node.hostRoot" . | quote }}
- --install-dir
- {{ include "sporelet.node.binDir" . | quote }}
- --containerd-config
- {{ include "sporelet.node.containerdConfig" . | quote }}
- --runtime-name
- {{ .Values.runtimeClass.handler | quote }}
- --snapshotter-socket
- {{ include "sporelet.node.socket" . | quote }}
- --shim-config
- {{ $n.shimConfig | quote }}
- --shim-link-dir
- {{ $n.shimLinkDir | quote }}
{{- if $n.containerd.setCriSnapshotter }}
- --cri-snapshotter
- spore
{{- end }}
{{- if $n.containerd.restart }}
- --restart-cmd
- {{ include "sporelet.node.restartCmd" . | quote }}
{{- end }}
{{- end -}}

{{/*
containerd's restart, run by the installer only when its configuration
changed: in the host's namespaces through PID 1 (the pod has hostPID), so it
is the host's systemctl and the host's containerd unit.
*/}}
{{- define "sporelet.node.restartCmd" -}}
nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart {{ .Values.node.containerd.serviceName }}
{{- end -}}

{{/* The shim's configuration (docs/shim.md), installed at node.shimConfig on the host. */}}
{{- define "sporelet.node.shimConfig" -}}
{{- $data := .Values.node.dataDir | trimSuffix "/" -}}
{{- $pool := .Values.node.shim.pool -}}
spore: {{ printf "%s/spore" (include "sporelet.node.binDir" .) | toJson }}
state_dir: {{ printf "%s/shim" (.Values.node.runDir | trimSuffix "/") | toJson }}
ready_timeout_ms: {{ .Values.node.shim.readyTimeoutMs | int }}
# pods' private disk copies on the node cache's filesystem: reflinked, not copied
disk_dir: {{ printf "%s/disks" $data | toJson }}
pool:
  size: {{ $pool.size | int }}
  memory_mib: {{ $pool.memoryMiB | int }}
  vcpus: {{ $pool.vcpus | int }}
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
