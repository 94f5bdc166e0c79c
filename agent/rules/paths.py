"""The paths a workload must be able to write, and how to judge them from probed PathAccess."""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

from agent.model import DeclaredContainer, ObservedProcess, PathAccess, Profile, Severity
from agent.rules.profiles import WEBHOOK_CERT_DIR

# JVM option carriers that spark-submit (and any JVM) reads; SPARK_SUBMIT_OPTS is the one
# the operator's workaround for Ivy uses (kubeflow/spark-operator#1132).
JVM_OPTION_VARIABLES = (
    "SPARK_SUBMIT_OPTS", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS")
# ivy.home and spark.jars.ivy are Ivy's home; ivy.cache.dir its cache; all are written.
IVY_KEYS = ("spark.jars.ivy=", "-Dspark.jars.ivy=", "-Divy.home=", "-Divy.cache.dir=")
PACKAGES_KEYS = ("spark.jars.packages=", "-Dspark.jars.packages=")
LOCAL_DIR_KEYS = ("spark.local.dir=", "-Dspark.local.dir=")


@dataclass(frozen=True, slots=True)
class Need:
    """Why a path must be writable, and the severity when it is not (None: the rule's)."""

    why: str
    severity: Severity | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a path can be written (or created), and the fact that decided it."""

    writable: bool | None
    detail: str


def _tokens(text: str) -> list[str]:
    if not text:
        return []  # shlex.split("") costs as much as a short command line
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _env(observed: ObservedProcess, declared: DeclaredContainer | None, name: str) -> str | None:
    value = observed.env(name)
    if value is None and declared is not None and not observed.environ:
        value = dict(declared.env).get(name)
    return value


def _jvm_tokens(observed: ObservedProcess, declared: DeclaredContainer | None) -> list[str]:
    """The cmdline's words, then those of each JVM option variable (where -D options hide)."""
    tokens = list(observed.cmdline)
    for name in JVM_OPTION_VARIABLES:
        tokens += _tokens(_env(observed, declared, name) or "")
    return tokens


def ivy_dirs(observed: ObservedProcess, declared: DeclaredContainer | None) -> tuple[str, ...]:
    """Ivy directories set through the cmdline or JVM option variables, in order found."""
    tokens = _jvm_tokens(observed, declared)
    found: list[str] = []
    for token in tokens:
        for key in IVY_KEYS:
            if token.startswith(key) and token[len(key):].startswith("/"):
                found.append(posixpath.normpath(token[len(key):]))
    return tuple(dict.fromkeys(found))


def uses_packages(observed: ObservedProcess, declared: DeclaredContainer | None) -> bool:
    """spark-submit resolves Maven packages with Ivy (under HOME unless spark.jars.ivy says
    otherwise): `--packages`, or spark.jars.packages on the cmdline or in a JVM option
    variable."""
    tokens = _jvm_tokens(observed, declared)
    return any(t == "--packages" or t.startswith(("--packages=", *PACKAGES_KEYS))
               for t in tokens)


def spark_local_dirs(observed: ObservedProcess, declared: DeclaredContainer | None
                     ) -> tuple[str, ...]:
    """spark.local.dir: $SPARK_LOCAL_DIRS (comma-separated; Spark on Kubernetes sets it) or
    -Dspark.local.dir= / spark.local.dir= on the cmdline or in a JVM option variable."""
    found = [d for d in (_env(observed, declared, "SPARK_LOCAL_DIRS") or "").split(",")]
    tokens = _jvm_tokens(observed, declared)
    for token in tokens:
        for key in LOCAL_DIR_KEYS:
            if token.startswith(key):
                found += token[len(key):].split(",")
    return tuple(dict.fromkeys(posixpath.normpath(d.strip()) for d in found
                               if d.strip().startswith("/")))


def tmp_dir(observed: ObservedProcess, declared: DeclaredContainer | None) -> str:
    value = _env(observed, declared, "TMPDIR")
    return posixpath.normpath(value) if value and value.startswith("/") else "/tmp"


def is_jvm(observed: ObservedProcess) -> bool:
    """The process's executable is `java` (its cmdline's first word when exe is unknown)."""
    program = observed.exe or (observed.cmdline[0] if observed.cmdline else "")
    return posixpath.basename(program) == "java"


def tmpdir_explicit(observed: ObservedProcess, declared: DeclaredContainer | None) -> bool:
    """No runtime sets TMPDIR, so when it is set someone chose it."""
    return _env(observed, declared, "TMPDIR") is not None


def home_explicit(observed: ObservedProcess, declared: DeclaredContainer | None) -> bool:
    """HOME set by the pod, or different from the passwd home: runc sets HOME from passwd
    only when the process environment has none (libcontainer/init_linux.go setupUser)."""
    if declared is not None and "HOME" in dict(declared.env):
        return True
    env_home = observed.identity.env_home or observed.env("HOME")
    home = observed.identity.home
    return env_home is not None and home is not None and env_home != home


def matters_severity(matters: bool | None, observed: ObservedProcess,
                     explicit: bool) -> Severity | None:
    """The profile decides; without one, low unless the process is a JVM or the variable
    was set explicitly (then None: the rule's own severity)."""
    if matters is True:
        return None
    if matters is False:
        return Severity.INFO
    return None if is_jvm(observed) or explicit else Severity.LOW


def home_dirs(observed: ObservedProcess) -> tuple[str, ...]:
    """The passwd home (what the JVM's user.home is) and $HOME (what shells and tools use)."""
    identity = observed.identity
    env_home = identity.env_home or observed.env("HOME")
    homes = [h for h in (identity.home, env_home) if h and h.startswith("/")]
    return tuple(dict.fromkeys(posixpath.normpath(h) for h in homes))


def _ancestors(path: str) -> list[str]:
    found = []
    while path != "/":
        path = posixpath.dirname(path)
        found.append(path)
    return found


def writes_needed(observed: ObservedProcess, declared: DeclaredContainer | None,
                  profile: Profile) -> dict[str, Need]:
    """Paths that must be writable, each with why (the home is HomeDirectoryUnusable's)."""
    needed: dict[str, Need] = {}
    fs = observed.filesystem
    if profile.temp_matters is not False and (fs is None or fs.root_readonly is not False):
        severity = matters_severity(profile.temp_matters, observed,
                                    tmpdir_explicit(observed, declared))
        why = ("the root filesystem is read-only and temporary files (the JVM, spark-submit, "
               "most runtimes) go to the temp directory")
        if severity is Severity.LOW:
            why = ("the root filesystem is read-only and most runtimes put temporary files "
                   "there (low: no profile says this workload writes it, it is no JVM and "
                   "$TMPDIR is not set)")
        needed[tmp_dir(observed, declared)] = Need(why, severity)
    for path in profile.writable_paths:
        why = ("the webhook writes tls.crt and tls.key there at start" if path == WEBHOOK_CERT_DIR
               else f"the {profile.name} profile needs it written")
        needed.setdefault(posixpath.normpath(path), Need(why))
    for path in ivy_dirs(observed, declared):
        needed.setdefault(path, Need("Ivy is configured there (spark.jars.ivy / -Divy.*) and "
                                     "spark-submit --packages writes its cache there"))
    for path in spark_local_dirs(observed, declared):
        needed.setdefault(path, Need("it is spark.local.dir ($SPARK_LOCAL_DIRS): Spark writes "
                                     "shuffle files, spilled blocks and its scratch space there"))
    return {p: need for p, need in needed.items() if p.startswith("/")}


def required_paths(observed: ObservedProcess, declared: DeclaredContainer | None,
                   profile: Profile) -> tuple[str, ...]:
    """Everything the engine must probe: homes, needed writes and their ancestors (to tell
    whether a missing directory could be created)."""
    needed = [*home_dirs(observed), tmp_dir(observed, declared),
              *writes_needed(observed, declared, profile)]
    paths = list(needed)
    for path in needed:
        paths += _ancestors(path)
    return tuple(dict.fromkeys(paths))


def judge_writable(observed: ObservedProcess, path: str, creatable: bool = True) -> Verdict:
    """Writable, or (with `creatable`) missing but its nearest existing parent is writable."""
    access = observed.path(path)
    if access is None:
        return Verdict(None, f"{path} was not probed")
    if access.writable:
        return Verdict(True, f"{path} is writable")
    if access.exists is False:
        if not creatable:
            return Verdict(False, f"{path} does not exist")
        if access.writable is False:
            # The collector judged it by its nearest existing parent directory.
            cause = "its parent is on a read-only mount" if access.on_readonly_mount else (
                access.error or "its parent is not writable")
            return Verdict(False, f"{path} does not exist and cannot be created: {cause}")
        return _judge_creatable(observed, path)
    return _not_writable(access)


def _not_writable(access: PathAccess) -> Verdict:
    if access.writable is None:
        return Verdict(None, f"{access.path}: {access.error or 'writability unknown'}")
    if access.on_readonly_mount:
        return Verdict(False, f"{access.path} is on a read-only mount")
    return Verdict(False, f"{access.path} is not writable by the process (mode/owner)")


def _judge_creatable(observed: ObservedProcess, path: str) -> Verdict:
    for parent in _ancestors(path):
        access = observed.path(parent)
        if access is None:
            return Verdict(None, f"{path} does not exist and {parent} was not probed")
        if access.exists is False:
            continue
        if access.writable:
            return Verdict(True, f"{path} does not exist but {parent} is writable")
        parent_verdict = _not_writable(access)
        if parent_verdict.writable is None:
            return parent_verdict
        return Verdict(False, f"{path} does not exist and cannot be created: "
                              f"{parent_verdict.detail}")
    return Verdict(None, f"{path} does not exist")
