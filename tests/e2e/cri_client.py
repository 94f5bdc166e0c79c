"""A small CRI client: gRPC on containerd's socket, `runtime.v1` messages from our own subset
of the API (cri_api/runtime_v1.proto), compiled with grpcio-tools on first use.

The generated module is not committed: it lands in `build/cri-api/<hash of the .proto>/`
(git-ignored), made in a temporary directory and renamed into place, so parallel test runs
and a changed .proto never see a half-written or stale module.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

PROTO = Path(__file__).with_name("cri_api") / "runtime_v1.proto"
BUILD = Path(__file__).resolve().parents[2] / "build" / "cri-api"
SERVICE = "/runtime.v1.RuntimeService/"


def generated() -> ModuleType:
    """runtime_v1_pb2, generated from PROTO if this version of it has not been yet."""
    digest = hashlib.sha256(PROTO.read_bytes()).hexdigest()[:16]
    out = BUILD / digest
    if not (out / "runtime_v1_pb2.py").exists():
        from grpc_tools import protoc  # only the generation needs grpcio-tools

        BUILD.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=BUILD, prefix=".gen-"))
        code = protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={staging}",
                            str(PROTO)])
        if code != 0:
            raise RuntimeError(f"protoc could not compile {PROTO.name} (exit {code})")
        try:
            os.rename(staging, out)
        except OSError:  # another run renamed its copy first: the same bytes
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module("runtime_v1_pb2")


api: Any = generated()  # the message classes (runtime_v1_pb2): api.PodSandboxConfig, ...

# RPC name -> (request class, reply class)
RPCS = {
    "Version": ("VersionRequest", "VersionResponse"),
    "RunPodSandbox": ("RunPodSandboxRequest", "RunPodSandboxResponse"),
    "StopPodSandbox": ("PodSandboxIdRequest", "Empty"),
    "RemovePodSandbox": ("PodSandboxIdRequest", "Empty"),
    "PodSandboxStatus": ("PodSandboxStatusRequest", "PodSandboxStatusResponse"),
    "ListPodSandbox": ("ListPodSandboxRequest", "ListPodSandboxResponse"),
    "CreateContainer": ("CreateContainerRequest", "CreateContainerResponse"),
    "StartContainer": ("ContainerIdRequest", "Empty"),
    "StopContainer": ("StopContainerRequest", "Empty"),
    "RemoveContainer": ("ContainerIdRequest", "Empty"),
    "ContainerStatus": ("ContainerStatusRequest", "ContainerStatusResponse"),
}


class CriClient:
    """`client.call("RunPodSandbox", config=...)`: one unary RPC, keyword fields of the request."""

    def __init__(self, socket: Path, timeout: float = 60) -> None:
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.timeout = timeout
        self._stubs = {
            name: self.channel.unary_unary(
                SERVICE + name, request_serializer=getattr(api, req).SerializeToString,
                response_deserializer=getattr(api, rep).FromString)
            for name, (req, rep) in RPCS.items()}

    def call(self, rpc: str, **fields: Any) -> Any:
        request = getattr(api, RPCS[rpc][0])(**fields)
        return self._stubs[rpc](request, timeout=self.timeout)

    def container_info(self, container_id: str) -> dict[str, Any]:
        """ContainerStatus verbose: containerd's own record, with the pid and the OCI spec it
        generated (`runtimeSpec`)."""
        reply = self.call("ContainerStatus", container_id=container_id, verbose=True)
        info: dict[str, Any] = json.loads(reply.info["info"])
        return info

    def sandbox_info(self, sandbox_id: str) -> dict[str, Any]:
        reply = self.call("PodSandboxStatus", pod_sandbox_id=sandbox_id, verbose=True)
        info: dict[str, Any] = json.loads(reply.info["info"])
        return info

    def close(self) -> None:
        self.channel.close()
