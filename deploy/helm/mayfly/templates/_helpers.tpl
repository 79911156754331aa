{{- define "mayfly.postgres" -}}{{ .Release.Name }}-postgres{{- end -}}
{{- define "mayfly.storageClass" -}}
{{- if . }}
storageClassName: {{ . | quote }}
{{- end }}
{{- end -}}
