#!/bin/sh
# One-shot audit through the DaemonSet pod already running on a node: the same engine
# as the `run` loop, printed as a table (or -o json|yaml) instead of posted as Events.
set -eu

# Deploy (once):
#   kubectl apply -k daemonset/

# Audit the Spark Operator pods on the node where the chosen opaudit pod runs.
# (`ds/opaudit` picks one pod of the DaemonSet; to audit a given node, exec into the
#  opaudit pod on that node: kubectl get pods -n opaudit -o wide.)
kubectl exec -n opaudit ds/opaudit -- \
  opaudit diagnose -l app.kubernetes.io/name=spark-operator

# Fail a pipeline on high findings, with machine-readable output:
#   kubectl exec -n opaudit ds/opaudit -- \
#     opaudit diagnose -l app.kubernetes.io/name=spark-operator -o json --fail-on high

# What the loop posted (events.k8s.io/v1, reason = rule id, reportingController opaudit):
#   kubectl events -n spark-operator --for pod/<pod-name>
