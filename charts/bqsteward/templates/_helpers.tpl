{{- define "bqsteward.labels" -}}
app.kubernetes.io/name: bqsteward
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "bqsteward.selector" -}}
app.kubernetes.io/name: bqsteward
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
