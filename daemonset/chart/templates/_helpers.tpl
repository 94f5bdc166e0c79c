{{/* The chart's name, for labels. */}}
{{- define "opaudit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object names: the release name when it already holds the chart's name (`helm install
opaudit`), as in the Kustomize base; else release-chart. */}}
{{- define "opaudit.fullname" -}}
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

{{- define "opaudit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opaudit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "opaudit.labels" -}}
{{ include "opaudit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* serviceAccount.name, or the full name for the account the chart creates; the schema
requires a name when it creates none. */}}
{{- define "opaudit.serviceAccountName" -}}
{{- default (include "opaudit.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* repository:tag, or repository[:tag]@digest when a digest is set. */}}
{{- define "opaudit.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "opaudit.checkovSkips" -}}
# checkov (security scanners run it on us): each skipped check is inherent to a node agent.
checkov.io/skip1: "CKV_K8S_17=hostPID is how the agent reads /proc/PID of the pods on its node (README: The agent's own privileges)"
checkov.io/skip2: "CKV_K8S_23=uid 0 - a non-root uid gets no effective capability from capabilities.add (no ambient caps)"
checkov.io/skip3: "CKV_K8S_40=uid 0 - a non-root uid gets no effective capability from capabilities.add (no ambient caps)"
checkov.io/skip4: "CKV_K8S_25=drops ALL and adds SYS_PTRACE, DAC_READ_SEARCH, SYS_ADMIN, each for one kernel check (daemonset/README.md)"
checkov.io/skip5: "CKV_K8S_39=SYS_ADMIN - setns(CLONE_NEWNET) into each pod network namespace needs it (daemonset/README.md)"
checkov.io/skip6: "CKV_K8S_38=the token is the agent's API access - get/list/watch pods, create/patch/get events"
{{- if not .Values.image.digest }}
checkov.io/skip7: "CKV_K8S_43=no digest is published for this release - pin one with image.digest (Helm) or kustomize edit set image"
{{- end }}
{{- end }}

{{/* The policy-report API of reports.api: its group, and its resource (plural). */}}
{{- define "opaudit.reportGroup" -}}
{{- if eq .Values.reports.api "wgpolicyk8s" }}wgpolicyk8s.io{{ else }}openreports.io{{ end }}
{{- end }}

{{- define "opaudit.reportResource" -}}
{{- if eq .Values.reports.api "wgpolicyk8s" }}policyreports{{ else }}reports{{ end }}
{{- end }}
