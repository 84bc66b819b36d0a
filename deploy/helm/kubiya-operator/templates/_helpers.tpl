{{/* Name of the chart, or nameOverride. */}}
{{- define "kubiya-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects (also the Lease's name). */}}
{{- define "kubiya-operator.fullname" -}}
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

{{- define "kubiya-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubiya-operator.labels" -}}
helm.sh/chart: {{ include "kubiya-operator.chart" . }}
{{ include "kubiya-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubiya
{{- end }}

{{- define "kubiya-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubiya-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubiya-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubiya-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when the operator has an API key of its own; fails when it has none and no
ClusterConnection is configured either (it could manage nothing until a Connection is made). */}}
{{- define "kubiya-operator.hasApiKey" -}}
{{- if or .Values.apiKey.create .Values.apiKey.existingSecret }}true
{{- else if not .Values.clusterConnections }}
{{- fail (printf "kubiya-operator: no Kubiya API key. Create a Secret (kubectl -n %s create secret generic kubiya-api-key --from-literal=api-key=...) and set apiKey.existingSecret=kubiya-api-key, or set apiKey.create=true and apiKey.value, or configure clusterConnections" .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* The Secret holding the API key. */}}
{{- define "kubiya-operator.apiKeySecretName" -}}
{{- if and .Values.apiKey.create .Values.apiKey.existingSecret }}
{{- fail "kubiya-operator: set either apiKey.existingSecret or apiKey.create, not both" }}
{{- else if .Values.apiKey.create }}
{{- if not .Values.apiKey.value }}
{{- fail "kubiya-operator: apiKey.create=true needs apiKey.value (the Kubiya API key)" }}
{{- end }}
{{- printf "%s-api-key" (include "kubiya-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else if .Values.apiKey.existingSecret }}
{{- .Values.apiKey.existingSecret }}
{{- else }}
{{- fail (printf "kubiya-operator: no Kubiya API key. Create a Secret (kubectl -n %s create secret generic kubiya-api-key --from-literal=api-key=...) and set apiKey.existingSecret=kubiya-api-key, or set apiKey.create=true and apiKey.value" .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* The key of the API key in that Secret. */}}
{{- define "kubiya-operator.apiKeySecretKey" -}}
{{- if .Values.apiKey.create }}api-key{{ else }}{{ .Values.apiKey.existingSecretKey | default "api-key" }}{{ end }}
{{- end }}

{{/* RBAC rules in the watched namespaces. */}}
{{- define "kubiya-operator.rules" -}}
- apiGroups: [kubiya.ai]
  resources: [environments]
  verbs: [get, list, watch, patch]
- apiGroups: [kubiya.ai]
  resources: [environments/status]
  verbs: [patch]
# WorkerQueues: the queues of the Environments above (patch sets their finalizer).
- apiGroups: [kubiya.ai]
  resources: [workerqueues]
  verbs: [get, list, watch, patch]
- apiGroups: [kubiya.ai]
  resources: [workerqueues/status]
  verbs: [patch]
# The worker-registration Secrets it writes (owned by their Environment; server-side apply
# creates them with patch), and deletes when the Environment is no longer its environment's
# owner (taken over from another cluster, refused); the Secrets an Environment's env vars come
# from (get; every Secret is watched by metadata only, so that a change wakes its users).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, patch, delete]
# The Deployments that run a WorkerQueue's workers (spec.workers; owned by the queue, created
# with server-side apply): watched by their label, scaled to 0 and deleted before the queue.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# Connections: the control plane and Secret an Environment's organisation is reached with (the
# Secrets are read with the get above); patch sets their finalizer while they are in use.
- apiGroups: [kubiya.ai]
  resources: [connections]
  verbs: [list, watch, patch]
- apiGroups: [kubiya.ai]
  resources: [connections/status]
  verbs: [patch]
{{- end }}

{{/* RBAC rules for the cluster objects it reads by name. */}}
{{- define "kubiya-operator.clusterRules" -}}
# Cluster objects it reads: namespaces (kube-system's UID names this cluster in the owner markers
# of remote environments; a ClusterConnection's namespaceSelector is matched against namespace
# labels), its own CRDs (while the Environment CRD is being deleted, deletions release remote
# environments instead of deleting them), and ClusterConnections.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get]
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  resourceNames: [environments.kubiya.ai, connections.kubiya.ai, clusterconnections.kubiya.ai, workerqueues.kubiya.ai]
  verbs: [get]
- apiGroups: [kubiya.ai]
  resources: [clusterconnections]
  verbs: [list, watch, patch]
- apiGroups: [kubiya.ai]
  resources: [clusterconnections/status]
  verbs: [patch]
{{- end }}
