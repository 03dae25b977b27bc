{{/* Names, labels and the per-probe decisions the templates share. */}}

{{- define "filewatcher.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "filewatcher.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "filewatcher.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "filewatcher.selectorLabels" -}}
app.kubernetes.io/name: {{ include "filewatcher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "filewatcher.labels" -}}
helm.sh/chart: {{ include "filewatcher.chart" . }}
{{ include "filewatcher.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "filewatcher.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "filewatcher.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag[@digest] of an image value ({repository, tag, digest}); the tag defaults to appVersion. */}}
{{- define "filewatcher.image" -}}
{{- $img := index . 0 }}{{- $root := index . 1 }}
{{- $ref := printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- if $img.digest }}{{ $ref = printf "%s@%s" $ref $img.digest }}{{ end }}
{{- $ref }}
{{- end }}

{{/* "true" when the loader may load the kernel module (probe auto or module). */}}
{{- define "filewatcher.usesModule" -}}
{{- if ne .Values.probe "ebpf" }}true{{ end }}
{{- end }}

{{/* The init container that provides filewatcher.ko: "select", "build" or "" (none). */}}
{{- define "filewatcher.moduleInit" -}}
{{- if include "filewatcher.usesModule" . }}
{{- if eq .Values.module.source "image" }}select{{ else if eq .Values.module.source "build" }}build{{ end }}
{{- end }}
{{- end }}

{{/* The loader's --probe for the chart's probe value. */}}
{{- define "filewatcher.loaderProbe" -}}
{{- get (dict "auto" "auto" "module" "kmod" "ebpf" "bpf") .Values.probe }}
{{- end }}

{{/*
The loader's capabilities, one per line, and only those its probe needs:
  SYS_MODULE  finit_module/delete_module of filewatcher.ko (auto, module)
  BPF         the ring buffer map and the programs (always)
  PERFMON     tracing programs reading kernel memory, the tracepoint's perf event (always)
  SYS_ADMIN   perf_event_open under perf_event_paranoid >= 3 (auto, module)
  SYS_RESOURCE  lifting RLIMIT_MEMLOCK on kernels before 5.11 (memlockCapability)
*/}}
{{- define "filewatcher.loaderCapabilities" -}}
{{- $caps := list "BPF" "PERFMON" }}
{{- if include "filewatcher.usesModule" . }}
{{- $caps = prepend $caps "SYS_MODULE" }}
{{- if ge (int .Values.perfEventParanoid) 3 }}{{ $caps = append $caps "SYS_ADMIN" }}{{ end }}
{{- end }}
{{- if .Values.memlockCapability }}{{ $caps = append $caps "SYS_RESOURCE" }}{{ end }}
{{- toYaml $caps }}
{{- end }}

{{/* The OTLP base URL: otlp.endpoint, else the node's Collector at $(HOST_IP) on the protocol's port. */}}
{{- define "filewatcher.otlpEndpoint" -}}
{{- if .Values.otlp.endpoint }}{{ .Values.otlp.endpoint }}
{{- else if eq .Values.otlp.protocol "grpc" }}http://$(HOST_IP):4317
{{- else }}http://$(HOST_IP):4318
{{- end }}
{{- end }}
