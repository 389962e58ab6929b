{{/* Names and labels. */}}
{{- define "ctrail.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ctrail.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ctrail.labels" -}}
{{ include "ctrail.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ctrail.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "ctrail.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "ctrail.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The entity graph lists and watches pods and workloads (enrich.kubernetes_api). */}}
{{- define "ctrail.watchesKubernetes" -}}
{{- hasKey (.Values.config.enrich | default dict) "kubernetes_api" -}}
{{- end -}}

{{- define "ctrail.authSecret" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "ctrail.fullname" .)) -}}
{{- end -}}

{{- define "ctrail.tlsSecret" -}}
{{- .Values.webhook.tls.existingSecret | default (printf "%s-webhook-tls" (include "ctrail.fullname" .)) -}}
{{- end -}}

{{- define "ctrail.webhookService" -}}
{{- printf "%s-webhook" (include "ctrail.fullname" .) -}}
{{- end -}}

{{/* The pods that serve the webhook: the embedded pod, or the collect workers. */}}
{{- define "ctrail.webhookRole" -}}
{{- if eq .Values.mode "embedded" }}run{{ else }}collect{{ end -}}
{{- end -}}

{{/* What every ContainerTrail pod reads: its config, and the secrets as variables. */}}
{{- define "ctrail.env" -}}
- name: CTRAIL_OPS_TOKEN
  valueFrom: {secretKeyRef: {name: {{ include "ctrail.authSecret" . }}, key: ops-token}}
- name: CTRAIL_AUDIT_WEBHOOK_TOKEN
  valueFrom: {secretKeyRef: {name: {{ include "ctrail.authSecret" . }}, key: audit-webhook-token}}
{{- if .Values.falco.enabled }}
- name: CTRAIL_FALCO_TOKEN
  valueFrom: {secretKeyRef: {name: {{ include "ctrail.authSecret" . }}, key: falco-token}}
{{- end }}
{{- if eq .Values.mode "distributed" }}
{{- with .Values.elasticsearch.passwordSecret }}
{{- if .name }}
- name: CTRAIL_ES_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .name }}, key: {{ .key }}}}
{{- end }}
{{- end }}
{{- with .Values.kafka.security.passwordSecret }}
{{- if .name }}
- name: CTRAIL_KAFKA_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .name }}, key: {{ .key }}}}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Probes of the ops server, with the token from the environment (ctrail health --endpoint). */}}
{{- define "ctrail.probes" -}}
startupProbe:
  exec: {command: [ctrail, health, --endpoint, healthz, --config, /etc/ctrail/{{ .configKey }}]}
  periodSeconds: 5
  timeoutSeconds: 10
  failureThreshold: 60
livenessProbe:
  exec: {command: [ctrail, health, --endpoint, healthz, --config, /etc/ctrail/{{ .configKey }}]}
  periodSeconds: 30
  timeoutSeconds: 10
  failureThreshold: 3
readinessProbe:
  exec: {command: [ctrail, health, --endpoint, readyz, --config, /etc/ctrail/{{ .configKey }}]}
  periodSeconds: 15
  timeoutSeconds: 10
  failureThreshold: 2
{{- end -}}

{{/* One ContainerTrail pod spec: `ctrail ARGS` with its config, data and TLS mounts. */}}
{{- define "ctrail.podSpec" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "ctrail.serviceAccountName" $root }}
automountServiceAccountToken: {{ include "ctrail.watchesKubernetes" $root }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets: {{ toYaml . | nindent 2 }}
{{- end }}
securityContext: {{ toYaml $root.Values.podSecurityContext | nindent 2 }}
containers:
  - name: ctrail
    image: {{ include "ctrail.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args: {{ toJson .args }}
    env: {{ include "ctrail.env" $root | nindent 6 }}
    ports:
      - {name: ops, containerPort: {{ $root.Values.ops.port }}}
      {{- if .webhook }}
      - {name: webhook, containerPort: {{ $root.Values.webhook.port }}}
      {{- if $root.Values.falco.enabled }}
      - {name: falco, containerPort: {{ $root.Values.falco.port }}}
      {{- end }}
      {{- end }}
    {{- include "ctrail.probes" (dict "configKey" "containertrail.yaml") | nindent 4 }}
    resources: {{ toYaml (.resources | default $root.Values.resources) | nindent 6 }}
    securityContext: {{ toYaml $root.Values.securityContext | nindent 6 }}
    volumeMounts:
      - {name: config, mountPath: /etc/ctrail, readOnly: true}
      - {name: data, mountPath: /var/lib/ctrail/data}
      - {name: tmp, mountPath: /tmp}
      # The webhook's certificate: every pod's ops server serves https with it.
      - {name: webhook-tls, mountPath: /etc/ctrail-tls, readOnly: true}
      {{- if .webhook }}
      {{- if $root.Values.webhook.tls.clientCA.secretName }}
      - {name: webhook-client-ca, mountPath: /etc/ctrail-client-ca, readOnly: true}
      {{- end }}
      {{- end }}
      {{- if $root.Values.elasticsearch.caSecret.name }}
      - {name: es-ca, mountPath: /etc/ctrail-es-ca, readOnly: true}
      {{- end }}
volumes:
  - name: config
    configMap: {name: {{ include "ctrail.fullname" $root }}}
  - name: tmp
    emptyDir: {medium: Memory, sizeLimit: 64Mi}
  {{- if not .persistent }}
  - name: data
    emptyDir: {sizeLimit: 1Gi}
  {{- end }}
  - name: webhook-tls
    secret: {secretName: {{ include "ctrail.tlsSecret" $root }}, defaultMode: 0440}
  {{- if .webhook }}
  {{- if $root.Values.webhook.tls.clientCA.secretName }}
  - name: webhook-client-ca
    secret: {secretName: {{ $root.Values.webhook.tls.clientCA.secretName }}}
  {{- end }}
  {{- end }}
  {{- if $root.Values.elasticsearch.caSecret.name }}
  - name: es-ca
    secret: {secretName: {{ $root.Values.elasticsearch.caSecret.name }}}
  {{- end }}
{{- with $root.Values.nodeSelector }}
nodeSelector: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity: {{ toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
