{{/*
Internal helpers. Every helper takes a "memoryd scope":
  dict "values" <memoryd values> "context" <the root context $>
so the same templates work in this chart (values = .Values) and in an application
chart that depends on it (values = .Values.memoryd, Helm merges this chart's defaults
into that map). Names derive from the release and the values only, never from
.Chart, so both render the same names.
*/}}

{{- define "memoryd.name" -}}
{{- default "memoryd" .values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "memoryd.fullname" -}}
{{- if .values.fullnameOverride -}}
{{- .values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "memoryd.name" . -}}
{{- if contains $name .context.Release.Name -}}
{{- .context.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .context.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* memoryd's appVersion, also when rendered from a parent chart. */}}
{{- define "memoryd.appVersion" -}}
{{- if eq .context.Chart.Name "memoryd" -}}
{{- .context.Chart.AppVersion -}}
{{- else -}}
{{- $found := "" -}}
{{- range $name, $sub := (.context.Subcharts | default dict) -}}
{{- if eq $sub.Chart.Name "memoryd" -}}{{- $found = $sub.Chart.AppVersion -}}{{- end -}}
{{- end -}}
{{- required "memoryd: set image.tag (the memoryd chart is not a dependency of this chart)" $found -}}
{{- end -}}
{{- end -}}

{{- define "memoryd.image" -}}
{{- $image := .values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default (include "memoryd.appVersion" .) $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Labels of the resources this chart renders itself. */}}
{{- define "memoryd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "memoryd.name" . }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/version: {{ include "memoryd.appVersion" . | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
{{- end -}}

{{- define "memoryd.configMapName" -}}
{{- default (include "memoryd.fullname" .) .values.existingConfigMap -}}
{{- end -}}

{{- define "memoryd.hasConfig" -}}
{{- if or .values.config .values.memoryFiles .values.existingConfigMap -}}true{{- end -}}
{{- end -}}

{{- define "memoryd.secretName" -}}
{{- default (include "memoryd.fullname" .) .values.existingSecret.name -}}
{{- end -}}

{{/* Non-empty when this chart must render the Secret. */}}
{{- define "memoryd.createSecret" -}}
{{- if and (not .values.existingSecret.name) (or .values.redis.enabled .values.auth.enabled) -}}true{{- end -}}
{{- end -}}

{{/* The Secret key holding the Redis password, or empty when there is none. */}}
{{- define "memoryd.redisPasswordKey" -}}
{{- if .values.redis.enabled -}}
{{- if .values.existingSecret.name -}}
{{- .values.existingSecret.redisPasswordKey -}}
{{- else if .values.redis.password -}}
redis-password
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "memoryd.authTokenKey" -}}
{{- if .values.existingSecret.name -}}{{ .values.existingSecret.authTokenKey }}{{- else -}}auth-token{{- end -}}
{{- end -}}

{{- define "memoryd.redisUrlKey" -}}
{{- if .values.existingSecret.name -}}{{ .values.existingSecret.redisUrlKey }}{{- else -}}redis-url{{- end -}}
{{- end -}}

{{/* Directory of the Unix socket when listen is unix:PATH, else empty. */}}
{{- define "memoryd.socketDir" -}}
{{- if hasPrefix "unix:" .values.listen -}}
{{- dir (trimPrefix "unix:" .values.listen) -}}
{{- end -}}
{{- end -}}

{{/* The address agent containers dial: the listen address, wildcard hosts replaced by loopback. */}}
{{- define "memoryd.clientAddress" -}}
{{- $listen := .values.listen -}}
{{- if hasPrefix "unix:" $listen -}}
{{- $listen -}}
{{- else -}}
{{- $port := regexFind "[0-9]+$" $listen -}}
{{- $host := trimSuffix (printf ":%s" $port) $listen -}}
{{- if has $host (list "" "0.0.0.0" "[::]" "::") -}}
{{- printf "127.0.0.1:%s" $port -}}
{{- else -}}
{{- $listen -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Refuse values that would give a pod that cannot start. */}}
{{- define "memoryd.validate" -}}
{{- $v := .values -}}
{{- if and $v.sidecar.native (semverCompare "<1.29-0" .context.Capabilities.KubeVersion.Version) -}}
{{- fail (printf "memoryd: native sidecars need Kubernetes >= 1.29 (cluster: %s); set sidecar.native=false" .context.Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and $v.redis.enabled (not $v.existingSecret.name) (not $v.redis.url) -}}
{{- fail "memoryd: redis.enabled needs redis.url or existingSecret.name" -}}
{{- end -}}
{{- if and $v.auth.enabled (not $v.existingSecret.name) (not $v.auth.token) -}}
{{- fail "memoryd: auth.enabled needs auth.token or existingSecret.name" -}}
{{- end -}}
{{- if and $v.tls.enabled (not $v.tls.secretName) -}}
{{- fail "memoryd: tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- $loopback := or (hasPrefix "unix:" $v.listen) (hasPrefix "127." $v.listen) (hasPrefix "localhost:" $v.listen) (hasPrefix "[::1]:" $v.listen) -}}
{{- if not (or $loopback $v.auth.enabled $v.tls.enabled $v.allowInsecureBind) -}}
{{- fail (printf "memoryd: listen %s is not pod-local; enable auth or tls, or set allowInsecureBind" $v.listen) -}}
{{- end -}}
{{- end -}}
