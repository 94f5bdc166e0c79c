"""Stage the seeds' two Spark Operator pods on the real kernel and audit them with opaudit.

controller: uid 185, capabilities drop ALL + add NET_BIND_SERVICE (so NET_BIND_SERVICE is in
            the bounding set only), read-only root with a tmpfs /tmp, Go-style dual-stack
            listeners on 8080 (metrics) and 8081 (probes).
webhook:    a netns with net.ipv6.bindv6only=1 and a listener on [::]:9443 that does not set
            IPV6_V6ONLY=0, so it takes the sysctl's default and serves IPv6 only.
The declared side is the chart's rendering of each pod (scripts/demo-pods/, copied from
tests/fixtures/pods/). Everything staged is removed on exit, also on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from staging import Sock, Stage  # noqa: E402

PODS = ROOT / "scripts" / "demo-pods"
# The base image apache/spark:4.0.4 has uid 185 as `spark` with home /nonexistent.
PASSWD = "root:x:0:0:root:/root:/bin/bash\nspark:x:185:185::/nonexistent:/bin/sh\n"
WEBHOOK_CERTS = "/etc/k8s-webhook-server/serving-certs"


def pod_addresses(manifest: Path) -> tuple[list[str], list[str]]:
    pod: dict[str, Any] = yaml.safe_load(manifest.read_text())
    ips = [p["ip"] for p in pod.get("status", {}).get("podIPs", [])]
    return [f"{ip}/24" for ip in ips if ":" not in ip], [f"{ip}/64" for ip in ips if ":" in ip]


def stage_controller(stage: Stage) -> int:
    v4, v6 = pod_addresses(PODS / "controller.yaml")
    netns = stage.netns(v4=v4, v6=v6)
    root = stage.rootfs({"etc/passwd": PASSWD})
    listeners = [Sock("tcp", 6, "::", 8080, v6only=0), Sock("tcp", 6, "::", 8081, v6only=0)]
    proc = stage.spawn(listeners, netns=netns, root=root, uid=185, gid=185, groups=[185],
                       bounding=["NET_BIND_SERVICE"], no_new_privs=True, seccomp=True,
                       readonly_root=True, tmpfs=["/tmp"], comm="spark-operator")
    return proc.pid


def stage_webhook(stage: Stage) -> int:
    v4, v6 = pod_addresses(PODS / "webhook.yaml")
    netns = stage.netns(v4=v4, v6=v6, sysctls={"net.ipv6.bindv6only": 1})
    root = stage.rootfs({"etc/passwd": PASSWD})
    (root / WEBHOOK_CERTS.lstrip("/")).mkdir(parents=True)
    listeners = [Sock("tcp", 6, "::", 9443), Sock("tcp", 6, "::", 8080, v6only=0),
                 Sock("tcp", 6, "::", 8081, v6only=0)]
    proc = stage.spawn(listeners, netns=netns, root=root, uid=185, gid=185, groups=[185],
                       bounding=[], no_new_privs=True, seccomp=True, readonly_root=True,
                       tmpfs=[WEBHOOK_CERTS], comm="spark-operator")
    return proc.pid


def diagnose(pid: int, manifest: Path) -> None:
    cmd = [sys.executable, "-m", "agent.cli", "diagnose", "--pid", str(pid),
           "--pod-spec", str(manifest), "--fail-on", "critical"]
    print(f"$ opaudit diagnose --pid {pid} --pod-spec {manifest.relative_to(ROOT)}\n", flush=True)
    subprocess.run(cmd, check=False)


def main() -> int:
    if os.geteuid() != 0:
        print("scripts/demo stages network namespaces and processes with chosen uids and\n"
              "capabilities, which needs root. Without root it audits its own process:\n")
        return subprocess.run([sys.executable, "-m", "agent.cli", "diagnose", "--self"],
                              check=False).returncode
    stage = Stage()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        print("== controller: drop ALL + add NET_BIND_SERVICE, uid 185, ports 8080/8081 ==\n")
        diagnose(stage_controller(stage), PODS / "controller.yaml")
        print("\n== webhook: bindv6only=1, [::]:9443 without IPV6_V6ONLY=0 ==\n")
        diagnose(stage_webhook(stage), PODS / "webhook.yaml")
    finally:
        stage.close()
    print("\nstaged namespaces and processes removed.")
    print("\n== before deploy: the same manifests predicted, nothing running ==\n")
    manifests = [str((PODS / name).relative_to(ROOT))
                 for name in ("controller.yaml", "webhook.yaml")]
    print(f"$ opaudit lint {' '.join(manifests)}\n", flush=True)
    subprocess.run([sys.executable, "-m", "agent.cli", "lint", *manifests, "--fail-on", "critical"],
                   cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
