{{/*
The pod template shared by every workload (worker, sinks, collector), so they all get the same
security context, volumes, configuration and scheduling defaults.

Call with (dict "root" $ "component" NAME "values" COMPONENT_VALUES "args" LIST "ports" LIST "env" LIST):
  component  label value and container name
  values     the component's block of values.yaml (resources, probes, extraArgs, extraEnv, scheduling)
  args       arguments after `mirrorscope` (e.g. list "worker")
  ports      extra container ports beyond health and metrics
  env        extra EnvVars computed by the workload's template
  volumes    (optional) extra Volumes, and mounts: their VolumeMounts (e.g. the worker's state key)
*/}}
{{- define "mirrorscope.podTemplate" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- $secret := include "mirrorscope.secretName" $root -}}
metadata:
  labels:
    {{- include "mirrorscope.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/part-of: mirrorscope
    {{- with $root.Values.commonLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- if $root.Values.secret.create }}
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- end }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "mirrorscope.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $v.terminationGracePeriodSeconds }}
  terminationGracePeriodSeconds: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .component }}
      image: {{ include "mirrorscope.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: ["mirrorscope"]
      args:
        {{- range .args }}
        - {{ . | quote }}
        {{- end }}
        - "--config"
        - "/etc/mirrorscope/config.yaml"
        {{- range $v.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      ports:
        - name: health
          containerPort: {{ $root.Values.ports.health }}
          protocol: TCP
        - name: metrics
          containerPort: {{ $root.Values.ports.metrics }}
          protocol: TCP
        {{- with .ports }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      envFrom:
        - configMapRef:
            name: {{ include "mirrorscope.fullname" $root }}-env
        {{- if $secret }}
        - secretRef:
            name: {{ $secret }}
        {{- end }}
      env:
        - name: HOME
          value: /tmp
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/mirrorscope
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if $v.dataSizeLimit }}
        - name: data
          mountPath: /var/lib/mirrorscope
        {{- end }}
        {{- with .mounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "mirrorscope.fullname" $root }}
        items:
          - key: {{ .component }}.yaml
            path: config.yaml
    - name: tmp
      emptyDir:
        sizeLimit: {{ $root.Values.tmpSizeLimit }}
    {{- if $v.dataSizeLimit }}
    - name: data
      emptyDir:
        sizeLimit: {{ $v.dataSizeLimit }}
    {{- end }}
    {{- with .volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with (default $root.Values.nodeSelector $v.nodeSelector) }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (default $root.Values.tolerations $v.tolerations) }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (default $root.Values.affinity $v.affinity) }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
