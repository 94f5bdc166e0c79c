"""Audit targets: pods -> their containers -> the processes on this host, as the audit
engine's requests (`agent.audit.AuditRequest`). Shared by `diagnose` and `run`.

- `node`: this host's node name (`--node`, else `NODE_NAME`);
- `procmap`: a container's processes, by the container ID in /proc/PID/cgroup;
- `sandbox`: restarting containers, and the pod sandbox that holds their netns;
- `requests`: the requests for a set of pods (`run`'s cycle, and `diagnose`'s);
- `diagnose`: the pods that `diagnose --pod/-l/--pod-spec` names, and `--pid --pod-spec`.
"""
