{{/*
The sidecar library: what an application chart includes to add memoryd to its pod.
Each takes the memoryd scope  (dict "values" .Values.memoryd "context" $).
See README.md ("Use as a sidecar library") for a complete pod template.

  memoryd.initContainers       list items for spec.initContainers (native form; else empty)
  memoryd.containers           list items for spec.containers (classic form; else empty)
  memoryd.container            the memoryd container itself (either form)
  memoryd.volumes              list items for spec.volumes
  memoryd.clientEnv            env items for agent containers (MEMORYD_ADDR, ...)
  memoryd.clientVolumeMounts   volumeMounts for agent containers (socket dir, auth token)
  memoryd.podLabels            pod labels (the metrics Service selects on them)
  memoryd.podAnnotations       Prometheus annotations and config/secret checksums
  memoryd.terminationGracePeriodSeconds   pass "appSeconds" too: (merge (dict "appSeconds" 20) $scope)
  memoryd.configmap, memoryd.secret       the manifests this chart renders itself
*/}}

{{- define "memoryd.args" -}}
- serve
- --listen
- {{ .values.listen | quote }}
- --health-listen
- {{ printf "%s:%d" .values.health.address (int .values.health.port) | quote }}
{{- if .values.metrics.enabled }}
- --metrics-listen
- {{ printf "%s:%d" .values.metrics.address (int .values.metrics.port) | quote }}
{{- end }}
- --shutdown-grace
- {{ .values.shutdownGrace | quote }}
- --log-level
- {{ .values.logLevel | quote }}
{{- if include "memoryd.hasConfig" . }}
- --config
- /etc/memoryd/memoryd.yaml
{{- end }}
{{- if include "memoryd.redisPasswordKey" . }}
- --redis-password-file
- /var/run/secrets/memoryd-redis/password
{{- end }}
{{- if .values.auth.enabled }}
- --auth-token-file
- /var/run/secrets/memoryd-auth/token
{{- end }}
{{- if .values.tls.enabled }}
- --tls-cert
- /var/run/secrets/memoryd-tls/tls.crt
- --tls-key
- /var/run/secrets/memoryd-tls/tls.key
{{- if .values.tls.clientAuth }}
- --tls-client-ca
- /var/run/secrets/memoryd-tls/ca.crt
{{- end }}
{{- end }}
{{- if .values.allowInsecureBind }}
- --allow-insecure-bind
{{- end }}
{{- range .values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "memoryd.probe" -}}
grpc:
  port: {{ .port }}
  service: {{ .probe.service | quote }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end -}}

{{- define "memoryd.container" -}}
{{- include "memoryd.validate" . -}}
{{- $v := .values -}}
{{- $port := int $v.health.port -}}
- name: {{ $v.sidecar.name }}
  image: {{ include "memoryd.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $v.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  args:
    {{- include "memoryd.args" . | nindent 4 }}
  {{- if or $v.redis.enabled $v.extraEnv }}
  env:
    {{- if $v.redis.enabled }}
    - name: MEMORYD_REDIS_URL
      valueFrom:
        secretKeyRef:
          name: {{ include "memoryd.secretName" . }}
          key: {{ include "memoryd.redisUrlKey" . }}
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  ports:
    - name: memoryd-health
      containerPort: {{ $port }}
      protocol: TCP
    {{- if $v.metrics.enabled }}
    - name: memoryd-metrics
      containerPort: {{ int $v.metrics.port }}
      protocol: TCP
    {{- end }}
  {{- if $v.probes.startup.enabled }}
  startupProbe:
    {{- include "memoryd.probe" (dict "port" $port "probe" $v.probes.startup) | nindent 4 }}
  {{- end }}
  {{- if $v.probes.liveness.enabled }}
  livenessProbe:
    {{- include "memoryd.probe" (dict "port" $port "probe" $v.probes.liveness) | nindent 4 }}
  {{- end }}
  {{- if $v.probes.readiness.enabled }}
  readinessProbe:
    {{- include "memoryd.probe" (dict "port" $port "probe" $v.probes.readiness) | nindent 4 }}
  {{- end }}
  {{- if and (not $v.sidecar.native) $v.sidecar.classicPreStopSeconds }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", {{ $v.sidecar.classicPreStopSeconds | quote }}]
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  terminationMessagePolicy: FallbackToLogsOnError
  volumeMounts:
    - name: memoryd-tmp
      mountPath: /tmp
    {{- if include "memoryd.hasConfig" . }}
    - name: memoryd-config
      mountPath: /etc/memoryd
      readOnly: true
    {{- end }}
    {{- with include "memoryd.socketDir" . }}
    - name: memoryd-socket
      mountPath: {{ . }}
    {{- end }}
    {{- if include "memoryd.redisPasswordKey" . }}
    - name: memoryd-redis
      mountPath: /var/run/secrets/memoryd-redis
      readOnly: true
    {{- end }}
    {{- if $v.auth.enabled }}
    - name: memoryd-auth
      mountPath: /var/run/secrets/memoryd-auth
      readOnly: true
    {{- end }}
    {{- if $v.tls.enabled }}
    - name: memoryd-tls
      mountPath: /var/run/secrets/memoryd-tls
      readOnly: true
    {{- end }}
{{- end -}}

{{- define "memoryd.initContainers" -}}
{{- if .values.sidecar.native -}}
{{- include "memoryd.container" . -}}
{{- end -}}
{{- end -}}

{{- define "memoryd.containers" -}}
{{- if not .values.sidecar.native -}}
{{- include "memoryd.container" . -}}
{{- end -}}
{{- end -}}

{{- define "memoryd.volumes" -}}
{{- $v := .values -}}
- name: memoryd-tmp
  emptyDir:
    sizeLimit: {{ $v.tmpSizeLimit }}
{{- if include "memoryd.hasConfig" . }}
- name: memoryd-config
  configMap:
    name: {{ include "memoryd.configMapName" . }}
    {{- if not $v.existingConfigMap }}
    items:
      {{- if $v.config }}
      - key: memoryd.yaml
        path: memoryd.yaml
      {{- end }}
      {{- range $file, $_ := $v.memoryFiles }}
      - key: {{ printf "memories.%s" $file }}
        path: {{ printf "memories/%s" $file }}
      {{- end }}
    {{- end }}
{{- end }}
{{- if include "memoryd.socketDir" . }}
- name: memoryd-socket
  emptyDir:
    sizeLimit: 1Mi
{{- end }}
{{- with include "memoryd.redisPasswordKey" . }}
- name: memoryd-redis
  secret:
    secretName: {{ include "memoryd.secretName" $ }}
    defaultMode: 0444
    items:
      - key: {{ . }}
        path: password
{{- end }}
{{- if $v.auth.enabled }}
- name: memoryd-auth
  secret:
    secretName: {{ include "memoryd.secretName" . }}
    defaultMode: 0444
    items:
      - key: {{ include "memoryd.authTokenKey" . }}
        path: token
{{- end }}
{{- if $v.tls.enabled }}
- name: memoryd-tls
  secret:
    secretName: {{ $v.tls.secretName }}
    defaultMode: 0444
{{- end }}
{{- end -}}

{{- define "memoryd.clientEnv" -}}
- name: MEMORYD_ADDR
  value: {{ include "memoryd.clientAddress" . | quote }}
{{- if .values.auth.enabled }}
- name: MEMORYD_TOKEN_FILE
  value: /var/run/secrets/memoryd-auth/token
{{- end }}
{{- if .values.tls.enabled }}
- name: MEMORYD_TLS_CA_FILE
  value: /var/run/secrets/memoryd-tls/ca.crt
{{- end }}
{{- end -}}

{{- define "memoryd.clientVolumeMounts" -}}
{{- with include "memoryd.socketDir" . }}
- name: memoryd-socket
  mountPath: {{ . }}
{{- end }}
{{- if .values.auth.enabled }}
- name: memoryd-auth
  mountPath: /var/run/secrets/memoryd-auth
  readOnly: true
{{- end }}
{{- if .values.tls.enabled }}
- name: memoryd-tls
  mountPath: /var/run/secrets/memoryd-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "memoryd.podLabels" -}}
memoryd/sidecar: {{ include "memoryd.fullname" . }}
{{- end -}}

{{- define "memoryd.podAnnotations" -}}
{{- $v := .values -}}
checksum/memoryd-config: {{ toJson (list $v.config $v.memoryFiles $v.existingConfigMap) | sha256sum }}
checksum/memoryd-secret: {{ toJson (list $v.redis $v.auth $v.existingSecret) | sha256sum }}
{{- if and $v.metrics.enabled $v.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $v.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/*
Pod grace period that fits the agent's and memoryd's shutdown. Native sidecars get
SIGTERM only after the agent containers have exited, so the times add up; classic
containers all get SIGTERM at once (memoryd after its preStop sleep).
*/}}
{{- define "memoryd.terminationGracePeriodSeconds" -}}
{{- $v := .values -}}
{{- $app := int (default 0 .appSeconds) -}}
{{- $grace := int (ceil $v.shutdownGrace) -}}
{{- $margin := int $v.terminationGraceMarginSeconds -}}
{{- if $v.sidecar.native -}}
{{- add $app $grace $margin -}}
{{- else -}}
{{- add (max $app (add (int $v.sidecar.classicPreStopSeconds) $grace)) $margin -}}
{{- end -}}
{{- end -}}

{{- define "memoryd.configmap" -}}
{{- if and (not .values.existingConfigMap) (or .values.config .values.memoryFiles) -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "memoryd.fullname" . }}
  labels:
    {{- include "memoryd.labels" . | nindent 4 }}
data:
  {{- with .values.config }}
  memoryd.yaml: |
    {{- . | trimSuffix "\n" | nindent 4 }}
  {{- end }}
  {{- range $file, $content := .values.memoryFiles }}
  {{ printf "memories.%s" $file }}: |
    {{- $content | trimSuffix "\n" | nindent 4 }}
  {{- end }}
{{- end -}}
{{- end -}}

{{- define "memoryd.secret" -}}
{{- if include "memoryd.createSecret" . -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "memoryd.fullname" . }}
  labels:
    {{- include "memoryd.labels" . | nindent 4 }}
type: Opaque
stringData:
  {{- if .values.redis.enabled }}
  redis-url: {{ .values.redis.url | quote }}
  {{- with .values.redis.password }}
  redis-password: {{ . | quote }}
  {{- end }}
  {{- end }}
  {{- if .values.auth.enabled }}
  auth-token: {{ .values.auth.token | quote }}
  {{- end }}
{{- end -}}
{{- end -}}
