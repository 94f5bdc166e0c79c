"""Typed, immutable facts and findings shared by every layer.

Nothing here imports from the rest of the package: `collect` produces these objects,
`rules` consumes them, `output` renders them. JSON is made only in `output`. Each part has
its module (capabilities, protocols, fact names and gaps, process and network facts, the
observed process, the declared side, findings, configuration, lint); every name is
importable from `agent.model` itself.
"""

from __future__ import annotations

from agent.model.capabilities import (
    CAPABILITY_NAMES,
    capability_bit,
    capability_name,
    capability_summary,
    mask_names,
)
from agent.model.config import (
    DEFAULT_CONFIG,
    AuditConfig,
    Waiver,
)
from agent.model.declared import (
    GENERIC_PROFILE,
    DeclaredContainer,
    DeclaredPort,
    DeclaredProbe,
    DeclaredVolumeMount,
    PodRef,
    Profile,
)
from agent.model.facts import (
    FACT_NAMES,
    Fact,
    Gap,
    is_known_fact,
    path_fact,
)
from agent.model.findings import (
    AuditCycle,
    AuditResult,
    Finding,
    Outcome,
    Severity,
    TargetResult,
    Verdict,
)
from agent.model.lint import (
    LintContainer,
    LintFinding,
    LintResult,
    ManifestObject,
    RuntimePrediction,
)
from agent.model.network import (
    FdReader,
    InterfaceAddress,
    Listener,
    NetnsFacts,
    OwnerReader,
    SocketOwner,
    Sysctls,
)
from agent.model.observed import (
    NO_PROCESS,
    Identity,
    ObservedProcess,
)
from agent.model.process import (
    Capabilities,
    Filesystem,
    IdMapRange,
    IdQuad,
    Mount,
    PasswdEntry,
    PathAccess,
    ProcStat,
    Status,
)
from agent.model.protocols import (
    PORT_PROTOCOLS,
    IpVersion,
    ListenerProtocol,
    PortProtocol,
    listener_protocol,
)

__all__ = [
    "AuditConfig",
    "AuditCycle",
    "AuditResult",
    "CAPABILITY_NAMES",
    "Capabilities",
    "DEFAULT_CONFIG",
    "DeclaredContainer",
    "DeclaredPort",
    "DeclaredProbe",
    "DeclaredVolumeMount",
    "FACT_NAMES",
    "Fact",
    "FdReader",
    "Filesystem",
    "Finding",
    "GENERIC_PROFILE",
    "Gap",
    "IdMapRange",
    "IdQuad",
    "Identity",
    "InterfaceAddress",
    "IpVersion",
    "LintContainer",
    "LintFinding",
    "LintResult",
    "Listener",
    "ListenerProtocol",
    "ManifestObject",
    "Mount",
    "NO_PROCESS",
    "NetnsFacts",
    "ObservedProcess",
    "Outcome",
    "OwnerReader",
    "PORT_PROTOCOLS",
    "PasswdEntry",
    "PathAccess",
    "PodRef",
    "PortProtocol",
    "ProcStat",
    "Profile",
    "RuntimePrediction",
    "Severity",
    "SocketOwner",
    "Status",
    "Sysctls",
    "TargetResult",
    "Verdict",
    "Waiver",
    "capability_bit",
    "capability_name",
    "capability_summary",
    "is_known_fact",
    "listener_protocol",
    "mask_names",
    "path_fact",
]
