{{/* Names. fullname is kept to 40 characters so "<fullname>-pod-<n>-udp" stays a valid name. */}}
{{- define "mentra-cluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "mentra-cluster.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The session pods' StatefulSet; its pods are <this>-0, <this>-1, … and POD_ID is that name. */}}
{{- define "mentra-cluster.podSet" -}}
{{- printf "%s-pod" (include "mentra-cluster.fullname" .) -}}
{{- end -}}

{{- define "mentra-cluster.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "mentra-cluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "mentra-cluster.version" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mentra-cluster
{{- end -}}

{{- define "mentra-cluster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mentra-cluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mentra-cluster.podSelectorLabels" -}}
{{ include "mentra-cluster.selectorLabels" . }}
app.kubernetes.io/component: session-pod
{{- end -}}

{{- define "mentra-cluster.gatewaySelectorLabels" -}}
{{ include "mentra-cluster.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "mentra-cluster.version" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{- define "mentra-cluster.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "mentra-cluster.version" .) -}}
{{- end -}}

{{- define "mentra-cluster.secretName" -}}
{{- default (include "mentra-cluster.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* How many pods get a Service and a route: the most the StatefulSet can have. */}}
{{- define "mentra-cluster.maxPods" -}}
{{- if eq .Values.autoscaling.mode "none" -}}
{{- .Values.pod.replicas -}}
{{- else -}}
{{- .Values.autoscaling.maxReplicas -}}
{{- end -}}
{{- end -}}

{{/* The public base URL of the cluster (gateway), and the pods' URL template. */}}
{{- define "mentra-cluster.publicBase" -}}
{{- printf "%s://%s" .Values.ingress.scheme .Values.ingress.host -}}
{{- end -}}

{{/* udp.advertiseHost with its placeholders turned into Kubernetes env references. */}}
{{- define "mentra-cluster.udpAdvertiseHost" -}}
{{- .Values.udp.advertiseHost | replace "{podId}" "$(POD_ID)" | replace "{nodeName}" "$(NODE_NAME)" | replace "{hostIP}" "$(HOST_IP)" -}}
{{- end -}}

{{/* REDIS_URL, JWT_SECRET, ROUTE_TICKET_KEY, ADMIN_TOKEN (gateway and pods alike). */}}
{{- define "mentra-cluster.clusterEnv" -}}
- name: NODE_ENV
  value: production
- name: REDIS_URL
{{- if .Values.redis.embedded.enabled }}
  value: {{ printf "redis://%s-redis:6379" (include "mentra-cluster.fullname" .) | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ include "mentra-cluster.secretName" . }}
      key: REDIS_URL
{{- end }}
- name: REDIS_PREFIX
  value: {{ .Values.redis.prefix | quote }}
- name: JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "mentra-cluster.secretName" . }}
      key: JWT_SECRET
- name: ROUTE_TICKET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "mentra-cluster.secretName" . }}
      key: ROUTE_TICKET_KEY
- name: ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "mentra-cluster.secretName" . }}
      key: ADMIN_TOKEN
- name: LOG_LEVEL
  value: {{ .Values.common.logLevel | quote }}
{{- with .Values.common.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Values that cannot be checked by the schema alone. */}}
{{- define "mentra-cluster.validate" -}}
{{- if and (not .Values.redis.embedded.enabled) (not .Values.redis.url) (not .Values.secrets.existingSecret) -}}
{{- fail "Redis: set redis.url (managed Redis), or redis.embedded.enabled=true (trials), or secrets.existingSecret with a REDIS_URL key" -}}
{{- end -}}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- $needMs := add (mul (int .Values.pod.preStopSleepSeconds) 1000) (int .Values.pod.drainDeadlineMs) 5000 -}}
{{- if le (mul (int .Values.pod.terminationGracePeriodSeconds) 1000) $needMs -}}
{{- fail (printf "pod.terminationGracePeriodSeconds (%v s) must exceed pod.preStopSleepSeconds + pod.drainDeadlineMs/1000 + 5 s of shutdown (%v ms), or Kubernetes kills pods before their drain ends" .Values.pod.terminationGracePeriodSeconds $needMs) -}}
{{- end -}}
{{- if and (eq .Values.udp.mode "loadBalancer") (or (contains "{nodeName}" .Values.udp.advertiseHost) (contains "{hostIP}" .Values.udp.advertiseHost)) -}}
{{- fail "udp.mode=loadBalancer: udp.advertiseHost must name the pod's load balancer ({podId}), not its node ({nodeName}/{hostIP})" -}}
{{- end -}}
{{- end -}}
