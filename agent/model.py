"""Typed, immutable facts and findings shared by every layer.

Nothing here imports from the rest of the package: `collect` produces these objects,
`rules` consumes them, `report` renders them. JSON is made only in `report`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

# Linux capability numbers (include/uapi/linux/capability.h), spelled as a securityContext does.
CAPABILITY_NAMES: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip


def capability_name(bit: int) -> str:
    """`NET_BIND_SERVICE` for bit 10; `CAP_<n>` for a bit we have no name for."""
    return CAPABILITY_NAMES[bit] if 0 <= bit < len(CAPABILITY_NAMES) else f"CAP_{bit}"


def capability_bit(name: str) -> int | None:
    """Bit number for `NET_BIND_SERVICE`, `CAP_NET_BIND_SERVICE`, `net_bind_service` or `CAP_42`."""
    upper = name.strip().upper()
    bare = upper[4:] if upper.startswith("CAP_") else upper
    if bare in CAPABILITY_NAMES:
        return CAPABILITY_NAMES.index(bare)
    if bare.isdigit():
        return int(bare)
    return None


def mask_names(mask: int) -> tuple[str, ...]:
    """Sorted capability names of the bits set in `mask`."""
    return tuple(sorted(capability_name(b) for b in range(mask.bit_length()) if mask >> b & 1))


def capability_summary(mask: int, last_cap: int) -> str:
    """`-`, the names, `all 41`, or `all 41 but CHOWN, KILL` when more than half are set
    (of the kernel's 0..last_cap); a bit above last_cap is named after them."""
    full = (1 << (last_cap + 1)) - 1
    known, total = mask & full, last_cap + 1
    count = bin(known).count("1")
    if count == total:
        text = f"all {total}"
    elif count * 2 > total:
        text = f"all {total} but {', '.join(mask_names(full & ~known))}"
    else:
        text = ", ".join(mask_names(known)) or "-"
    above = mask_names(mask & ~full)
    return f"{text}, {', '.join(above)}" if above else text


IpVersion = Literal[4, 6]  # an IP version; the AF_INET/AF_INET6 numbers are `address_family`
ListenerProtocol = Literal["tcp", "udp"]  # the socket tables, as ss names them
PortProtocol = Literal["TCP", "UDP", "SCTP"]  # core/v1 Protocol, as a pod spec spells it
PORT_PROTOCOLS: tuple[PortProtocol, ...] = ("TCP", "UDP", "SCTP")


def listener_protocol(declared: PortProtocol) -> ListenerProtocol | None:
    """The socket table that serves a declared port's protocol; None for SCTP, which opaudit
    does not dump."""
    if declared == "TCP":
        return "tcp"
    return "udp" if declared == "UDP" else None


class Severity(enum.Enum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown severity {text!r} (one of: {names})") from None


# --- process facts -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdQuad:
    """real, effective, saved, filesystem ids, as the container sees them."""

    real: int
    effective: int
    saved: int
    fs: int


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Raw capability masks from /proc/PID/status, plus the kernel's highest known bit."""

    effective: int
    permitted: int
    inheritable: int
    bounding: int
    ambient: int
    last_cap: int

    @property
    def full_mask(self) -> int:
        return (1 << (self.last_cap + 1)) - 1


@dataclass(frozen=True, slots=True)
class Status:
    """What /proc/PID/status says, ids still in the host's (initial user namespace) view."""

    name: str
    uid: IdQuad
    gid: IdQuad
    groups: tuple[int, ...]
    capabilities: Capabilities
    no_new_privs: bool | None
    seccomp: str | None  # "disabled" | "strict" | "filter"


@dataclass(frozen=True, slots=True)
class ProcStat:
    """What opaudit takes from /proc/PID/stat."""

    comm: str  # sanitised
    start_time: int  # clock ticks after boot: (pid, start_time) names one process for good
    state: str = ""  # field 3: "Z" for a zombie
    ppid: int = 0  # field 4
    kernel_thread: bool = False  # field 9 (flags) holds PF_KTHREAD


@dataclass(frozen=True, slots=True)
class IdMapRange:
    """One line of /proc/PID/uid_map: inside-id, outside-id, count."""

    inside: int
    outside: int
    count: int


@dataclass(frozen=True, slots=True)
class Mount:
    mount_id: int
    parent_id: int
    root: str  # the path inside the source filesystem (a subPath shows here)
    mount_point: str
    fstype: str
    source: str
    readonly: bool


@dataclass(frozen=True, slots=True)
class Filesystem:
    root_readonly: bool | None
    writable_mounts: tuple[str, ...]
    mounts: tuple[Mount, ...]


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True, slots=True)
class PathAccess:
    """Whether the process can write `path`, judged from inside its own root.

    `writable` combines the mount's ro flag, the mode bits against the process's fs uid,
    gid and groups, and CAP_DAC_OVERRIDE. None means it could not be told; `error` says why.
    """

    path: str
    exists: bool | None
    is_dir: bool | None
    on_readonly_mount: bool | None
    writable: bool | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """A fact that could not be read, and why (named in the report's `incomplete`)."""

    fact: str
    reason: str


# --- network facts -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sysctls:
    bindv6only: int | None
    disable_ipv6: int | None
    ip_unprivileged_port_start: int | None


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    interface: str
    family: IpVersion
    address: str
    prefixlen: int
    scope: str  # "global" | "link" | "host" | ...


@dataclass(frozen=True, slots=True)
class SocketOwner:
    pid: int
    comm: str
    fd: int
    start_time: int | None = None  # /proc/PID/stat field 22: (pid, start_time) survives pid reuse


@dataclass(frozen=True, slots=True)
class Listener:
    protocol: ListenerProtocol
    family: IpVersion
    address: str  # "0.0.0.0", "::", "127.0.0.1", "::ffff:192.0.2.1", ...
    port: int
    v6only: bool | None  # None for IPv4 sockets
    inode: int
    interface: str | None = None  # SO_BINDTODEVICE, as ss prints `%eth0`
    owners: tuple[SocketOwner, ...] = ()

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(sorted({o.pid for o in self.owners}))


FdReader = Literal["proc", "bpf"]  # what read the fd tables for socket owners


@dataclass(frozen=True, slots=True)
class OwnerReader:
    """Which reader found the listeners' owners (`agent.collect.sockets`) and why not the
    other, in one line. `fallback` is set when the BPF iterator was wanted but could not
    run: a fixed word for what refused (`fditer.Cause`, or "pid_namespace")."""

    reader: FdReader
    why: str
    fallback: str = ""


@dataclass(frozen=True, slots=True)
class NetnsFacts:
    inode: int
    sysctls: Sysctls
    addresses: tuple[InterfaceAddress, ...]
    listeners: tuple[Listener, ...]
    host_network: bool = False
    gaps: tuple[Gap, ...] = ()
    owner_reader: OwnerReader | None = None  # None: no listener, so no owner looked for


# --- one observed process ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    uid: IdQuad | None
    gid: IdQuad | None
    groups: tuple[int, ...] | None
    user: str | None  # passwd name of the effective uid inside the container
    home: str | None  # passwd home
    env_home: str | None  # HOME from /proc/PID/environ


NO_PROCESS = 0  # no process has pid 0 in /proc: the target of a container with no process


@dataclass(frozen=True, slots=True)
class ObservedProcess:
    """Everything opaudit read about one process. A None fact is named in `incomplete`."""

    pid: int
    start_time: int | None  # clock ticks since boot, from /proc/PID/stat: (pid, start) is unique
    comm: str  # sanitised
    cmdline: tuple[str, ...]  # sanitised
    identity: Identity
    capabilities: Capabilities | None
    no_new_privs: bool | None
    seccomp: str | None
    filesystem: Filesystem | None
    network: NetnsFacts | None
    environ: tuple[tuple[str, str], ...] = ()  # never reported: may hold secrets
    paths: tuple[PathAccess, ...] = ()
    incomplete: tuple[Gap, ...] = ()
    exe: str | None = None  # readlink /proc/PID/exe, as the process's mount namespace names it
    # The container has no live process (a crash loop): `network` is its pod's netns, read
    # through the pod's sandbox process `pid`; no other fact is the container's own.
    via_sandbox: bool = False
    # Every process of the container this process belongs to, itself included, when the
    # audit knows the container (`diagnose --pod/-l/--pod-spec`, `run`): capabilities, the
    # securityContext and listeners are the container's, so its rules judge their union
    # (a root parent binding :80 needs NET_BIND_SERVICE for a child listening on 5000).
    container_pids: tuple[int, ...] = ()

    def env(self, name: str) -> str | None:
        for key, value in self.environ:
            if key == name:
                return value
        return None

    def path(self, path: str) -> PathAccess | None:
        for access in self.paths:
            if access.path == path:
                return access
        return None


# --- the declared side ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeclaredPort:
    port: int
    protocol: PortProtocol = "TCP"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class DeclaredProbe:
    kind: str  # "liveness" | "readiness" | "startup"
    handler: str  # "httpGet" | "tcpSocket" | "grpc" | "exec"
    port: int | None  # resolved number; None for exec or an unresolvable name
    port_name: str | None = None  # the name as written, when it was a name
    host: str | None = None


@dataclass(frozen=True, slots=True)
class DeclaredVolumeMount:
    name: str
    mount_path: str
    read_only: bool
    sub_path: str | None
    volume_type: str | None  # "emptyDir", "configMap", "secret", "projected", ...
    size_limit: str | None = None  # emptyDir sizeLimit as written
    medium: str | None = None  # emptyDir medium


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str
    uid: str
    # A static pod's cgroups carry its config hash, not the mirror pod's uid: the mirror
    # pod's `kubernetes.io/config.mirror` annotation holds that hash (32 hex).
    config_hash: str | None = None


@dataclass(frozen=True, slots=True)
class DeclaredContainer:
    """One container's effective declared settings: container-level over pod-level."""

    pod: PodRef
    container_name: str
    container_id: str | None  # "containerd://<64 hex>" from status
    labels: tuple[tuple[str, str], ...]
    run_as_user: int | None
    run_as_group: int | None
    run_as_non_root: bool | None
    privileged: bool | None
    allow_privilege_escalation: bool | None
    capabilities_add: tuple[str, ...]
    capabilities_drop: tuple[str, ...]
    seccomp_profile: str | None  # "RuntimeDefault" | "Unconfined" | "Localhost" | None
    read_only_root_filesystem: bool | None
    ports: tuple[DeclaredPort, ...]
    probes: tuple[DeclaredProbe, ...]
    volume_mounts: tuple[DeclaredVolumeMount, ...]
    pod_ips: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()  # literal `value`s only; valueFrom is not resolved
    status_uid: int | None = None  # containerStatuses[].user.linux.uid (Kubernetes >= 1.31)
    host_network: bool = False  # spec.hostNetwork: the node's netns, and its sockets
    sysctls: tuple[tuple[str, str], ...] = ()  # spec.securityContext.sysctls (name, value)

    def label(self, key: str) -> str | None:
        for k, v in self.labels:
            if k == key:
                return v
        return None

    def sysctl(self, name: str) -> str | None:
        """The value the pod sets for `name`; Kubernetes accepts `/` as the separator too."""
        for k, v in self.sysctls:
            if k.replace("/", ".") == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Profile:
    """What a kind of workload needs: matched by labels, from the built-ins or --config."""

    name: str
    selector: tuple[tuple[str, str], ...] = ()
    writable_paths: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    expected_uid: int | None = None
    helm_values_prefix: str | None = None  # e.g. "controller" -> controller.securityContext
    # Whether the workload writes its temp dir / uses HOME: True/False from the profile;
    # None (not said) leaves it to the process: a JVM, or an explicit $TMPDIR/$HOME.
    temp_matters: bool | None = None
    home_matters: bool | None = None


GENERIC_PROFILE = Profile(name="generic")


# --- findings ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: Severity
    message: str
    remediation: str
    pid: int | None = None
    pod: str | None = None  # "namespace/name"
    container: str | None = None
    observed: str | None = None  # what the kernel showed, in a few words
    declared: str | None = None  # what the pod (or its profile) declares, when it matters
    fix_line: str = ""  # the catalogue's one-line fix, for where a snippet does not fit
    # What the finding is about, stable across restarts and rewording ("tcp/8081", "/tmp",
    # "NET_BIND_SERVICE"; "" for the container as a whole): with rule and container it names
    # one finding (a policy report result's resultID, the Event's series).
    subject: str = ""
    # Every process of the container it was seen in (`pid` is the first), with their comms:
    # a rule fires once per container and subject, however many processes it holds.
    pids: tuple[int, ...] = ()
    comms: tuple[str, ...] = ()


class Outcome(enum.Enum):
    """A rule's verdict on one process (the policy report's fail/warn, pass, skip, error)."""

    FIRED = "fired"
    PASSED = "passed"  # evaluated with every fact it needs, and did not fire
    WAIVED = "waived"  # fired, but a --config waiver silences it
    UNKNOWN = "unknown"  # a fact it needs could not be read: silence is not a pass


@dataclass(frozen=True, slots=True)
class Verdict:
    rule: str
    outcome: Outcome
    findings: tuple[Finding, ...] = ()
    missing: tuple[Gap, ...] = ()  # UNKNOWN: the facts that were missing, and why
    category: str = ""  # identity | privileges | filesystem | network | inspection
    severity: Severity | None = None  # the rule's severity (after --config overrides)
    reason: str = ""  # WAIVED: the reason the --config waiver gives


@dataclass(frozen=True, slots=True)
class TargetResult:
    """One audited process with its declared side (when known), its findings (most severe
    first) and every rule's verdict (catalogue order), on this process.

    A container is judged as a whole: its findings, one per rule and subject naming every
    pid (`Finding.pids`), sit on the target of its first process; its other processes'
    targets carry their facts and verdicts, and no findings. `AuditResult.findings` is thus
    one entry per rule x container x subject."""

    observed: ObservedProcess
    declared: DeclaredContainer | None
    profile: Profile
    findings: tuple[Finding, ...] = field(default=())
    verdicts: tuple[Verdict, ...] = field(default=())

    @property
    def container_key(self) -> tuple[str, str, str, str] | None:
        """The declared container this process belongs to (pod uid, namespace, name,
        container), which judgement and every output group by; None without a declared side."""
        d = self.declared
        return None if d is None else (d.pod.uid, d.pod.namespace, d.pod.name, d.container_name)


@dataclass(frozen=True, slots=True)
class AuditCycle:
    """What one `run` cycle covered, for sinks that keep node-wide state (metrics, reports):
    a pod audited with no process found has no target, yet its old findings are gone."""

    trigger: str  # "interval" | "watch" | "once"
    seconds: float  # wall time of the audit
    pod_uids: tuple[str, ...]  # every pod audited, with or without targets
    partial: bool  # only the pods a watch event named; the others keep their last audit


@dataclass(frozen=True, slots=True)
class AuditResult:
    node: str | None
    targets: tuple[TargetResult, ...]
    cycle: AuditCycle | None = None  # None for `diagnose`

    @property
    def findings(self) -> tuple[Finding, ...]:
        """One per rule x container x subject (see TargetResult), most severe first per
        container: what the table, JSON, Events, reports, log and metrics count."""
        return tuple(f for t in self.targets for f in t.findings)


# --- configuration (--config) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Waiver:
    """Silence `rule` for pods matching namespace and labels; the reason is mandatory."""

    rule: str
    reason: str
    namespace: str | None = None
    selector: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AuditConfig:
    profiles: tuple[Profile, ...] = ()
    waivers: tuple[Waiver, ...] = ()
    severity_overrides: tuple[tuple[str, Severity], ...] = ()  # (rule id, severity)


DEFAULT_CONFIG = AuditConfig()


# --- lint: facts predicted from manifests (`opaudit lint`) ----------------------------


@dataclass(frozen=True, slots=True)
class ManifestObject:
    """A workload object of the input, and where its container is written."""

    kind: str  # "Deployment", "Pod", "CronJob", ...
    namespace: str  # metadata.namespace as written ("" when the manifest leaves it out)
    name: str
    file: str  # the input as named on the command line ("-" is "stdin")
    line: int  # 1-based line of the container's entry in that file


@dataclass(frozen=True, slots=True)
class RuntimePrediction:
    """The snapshot predicted under one runtime model, for one alternative (`condition`:
    None when certain, else what must hold about the image, such as its file capabilities)."""

    runtime: str
    observed: ObservedProcess
    condition: str | None = None


@dataclass(frozen=True, slots=True)
class LintFinding:
    """A predicted finding and the runtimes under which it holds. `conditions` names, per
    runtime, what must hold for it there (empty: it holds for certain on those runtimes)."""

    finding: Finding
    runtimes: tuple[str, ...]
    conditions: tuple[tuple[str, str], ...] = ()  # (runtime, condition)


@dataclass(frozen=True, slots=True)
class LintContainer:
    source: ManifestObject
    declared: DeclaredContainer
    profile: Profile
    init: bool
    findings: tuple[LintFinding, ...]
    unknown: tuple[Verdict, ...]  # rules that could not be judged, with the missing facts
    predictions: tuple[RuntimePrediction, ...]


@dataclass(frozen=True, slots=True)
class LintResult:
    containers: tuple[LintContainer, ...]
    runtimes: tuple[str, ...]  # the models evaluated
    skipped: tuple[tuple[str, int], ...] = ()  # (kind, count) of objects with no pod template
    objects: int = 0  # workload objects read
    labels: tuple[tuple[str, str], ...] = ()  # runtime name -> as people say it
    sources: tuple[tuple[str, tuple[str, ...]], ...] = ()  # runtime name -> its model's sources

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f.finding for c in self.containers for f in c.findings)
