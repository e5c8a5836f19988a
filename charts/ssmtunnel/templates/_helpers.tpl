{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "ssmtunnel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "ssmtunnel.fullname" -}}
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

{{- define "ssmtunnel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of the operator's objects. The component is "operator", never "tunnel": the operator's own
children carry app.kubernetes.io/component=tunnel and managed-by=ssmtunnel-operator.
*/}}
{{- define "ssmtunnel.labels" -}}
helm.sh/chart: {{ include "ssmtunnel.chart" . }}
{{ include "ssmtunnel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ssmtunnel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ssmtunnel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ssmtunnel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ssmtunnel.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Operator image reference. */}}
{{- define "ssmtunnel.image" -}}
{{- if not .Values.image.registry }}
{{- fail "image.registry is empty: set it to the registry holding the ssmtunnel image (make push REGISTRY=... prints the reference), or install the chart from oci://<registry>/charts/ssmtunnel, which has it set" }}
{{- end }}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- with .Values.image.digest }}@{{ . }}{{ end }}
{{- end }}

{{/* Tunnel image reference: the operator's image unless tunnel.image.repository is set. */}}
{{- define "ssmtunnel.tunnelImage" -}}
{{- if .Values.tunnel.image.repository }}
{{- printf "%s:%s" .Values.tunnel.image.repository (.Values.tunnel.image.tag | default .Values.image.tag | default .Chart.AppVersion | toString) }}
{{- else }}
{{- include "ssmtunnel.image" . }}
{{- end }}
{{- end }}

{{/*
Checks the schema cannot express clearly. "latest" makes kubelets pull on every start and hides which
version runs; these images are versioned.
*/}}
{{- define "ssmtunnel.validate" -}}
{{- if eq (toString .Values.image.tag) "latest" }}
{{- fail "image.tag: \"latest\" is refused: set the version tag, e.g. --set image.tag=v0.1.0" }}
{{- end }}
{{- if eq (toString .Values.tunnel.image.tag) "latest" }}
{{- fail "tunnel.image.tag: \"latest\" is refused: set the version tag, or leave it empty to use image.tag" }}
{{- end }}
{{- end }}
