"""Who the process runs as, against what the pod declares; and whether its home is usable."""

from __future__ import annotations

from collections.abc import Iterator

from agent.model import DeclaredContainer, Fact, Finding, ObservedProcess, Profile, Severity
from agent.rules.entry import FixSite, Rule
from agent.rules.fixes import IVY_SUBMIT_OPTS, env_fix, mount_at, writable_volume_fix
from agent.rules.paths import (
    home_dirs,
    home_explicit,
    ivy_dirs,
    judge_writable,
    matters_severity,
    uses_packages,
)

HOME_DIR = "/tmp"  # where the HOME fix points: IVY_SUBMIT_OPTS puts Ivy under it too
UID_FIX = "runAsNonRoot: true\nrunAsUser: {uid}\nrunAsGroup: {uid}"
CONTAINER = FixSite.CONTAINER_SECURITY_CONTEXT


def runs_as_root(observed: ObservedProcess, declared: DeclaredContainer | None,
                 profile: Profile) -> Iterator[Finding]:
    uid = observed.identity.uid
    if uid is None or uid.effective != 0:
        return
    said = ""
    if declared is not None and declared.run_as_non_root:
        said = " although runAsNonRoot: true is declared"
    message = (f"{observed.comm} (pid {observed.pid}) runs with effective uid 0 inside the "
               f"container{said}; a root process owns every file in the container and is one "
               "kernel bug away from the node.")
    target = profile.expected_uid if profile.expected_uid is not None else 1000
    yield RUNS_AS_ROOT.finding(message, profile=profile, uid=target, observed="uid 0",
                               declared="runAsNonRoot: true" if said else None)


RUNS_AS_ROOT = Rule(
    "RunsAsRoot", Severity.HIGH,
    "effective uid, as the container sees it, is 0",
    "root in the container owns its files and widens every escape",
    "set runAsNonRoot: true and runAsUser to a non-zero uid", runs_as_root,
    facts=(Fact.UID,), remediation=UID_FIX, site=CONTAINER)


def run_as_user_mismatch(observed: ObservedProcess, declared: DeclaredContainer | None,
                         profile: Profile) -> Iterator[Finding]:
    uid = observed.identity.uid
    if uid is None:
        return
    wanted = declared.run_as_user if declared is not None else None
    source = "runAsUser is declared as"
    if wanted is None and declared is not None and profile.expected_uid is not None:
        wanted, source = profile.expected_uid, f"the {profile.name} profile expects uid"
    if wanted is None or wanted == uid.effective:
        return
    message = (f"{observed.comm} (pid {observed.pid}) runs as uid {uid.effective} but {source} "
               f"{wanted}; file ownership, fsGroup and the image's own paths assume the "
               "declared uid.")
    yield RUN_AS_USER_MISMATCH.finding(message, profile=profile, uid=wanted,
                                       observed=f"uid {uid.effective}",
                                       declared=f"{source} {wanted}")


RUN_AS_USER_MISMATCH = Rule(
    "RunAsUserMismatch", Severity.HIGH,
    "declared runAsUser (container over pod) differs from the observed effective uid",
    "the process is not who the manifest says; ownership and policy checks are wrong",
    "make runAsUser match the uid the workload must run as", run_as_user_mismatch,
    facts=(Fact.UID, Fact.POD_SPEC), remediation=UID_FIX, site=CONTAINER)


def run_as_group_mismatch(observed: ObservedProcess, declared: DeclaredContainer | None,
                          profile: Profile) -> Iterator[Finding]:
    gid = observed.identity.gid
    if gid is None or declared is None or declared.run_as_group is None:
        return
    if declared.run_as_group == gid.effective:
        return
    message = (f"{observed.comm} (pid {observed.pid}) runs with gid {gid.effective} but "
               f"runAsGroup is declared as {declared.run_as_group}; files it creates get the "
               "wrong group and group-based access differs from what was reviewed.")
    yield RUN_AS_GROUP_MISMATCH.finding(message, profile=profile, gid=declared.run_as_group,
                                        observed=f"gid {gid.effective}",
                                        declared=f"runAsGroup: {declared.run_as_group}")


RUN_AS_GROUP_MISMATCH = Rule(
    "RunAsGroupMismatch", Severity.MEDIUM,
    "declared runAsGroup differs from the observed effective gid",
    "files and group access follow the wrong gid",
    "make runAsGroup match the gid the workload must run as", run_as_group_mismatch,
    facts=(Fact.GID, Fact.POD_SPEC), remediation="runAsGroup: {gid}", site=CONTAINER)


def _is_spark(observed: ObservedProcess, profile: Profile) -> bool:
    return bool(profile.helm_values_prefix) or any("spark" in a for a in observed.cmdline[:2])


def _home_problems(observed: ObservedProcess) -> tuple[list[str], bool]:
    """What is wrong with the homes, and whether any of them could not be judged."""
    identity = observed.identity
    if identity.uid is not None and identity.user is None and identity.home is None:
        unread = any("passwd" in g.fact or "identity" in g.fact for g in observed.incomplete)
        if not unread:
            return [f"uid {identity.uid.effective} has no entry in the container's /etc/passwd"
                    ], False
    problems: list[str] = []
    unknown = False
    for home in home_dirs(observed):
        verdict = judge_writable(observed, home, creatable=False)
        if verdict.writable is False:
            # The JVM's user.home is the passwd home; shells and most tools use $HOME.
            label = "" if home == identity.home else "$HOME "
            problems.append(label + verdict.detail)
        unknown |= verdict.writable is None
    return problems, unknown


def home_directory_unusable(observed: ObservedProcess, declared: DeclaredContainer | None,
                            profile: Profile) -> Iterator[Finding]:
    problems, _ = _home_problems(observed)
    if not problems:
        return
    # Ivy resolves spark.jars.packages under HOME, whatever the profile says of the rest.
    matters = True if uses_packages(observed, declared) else profile.home_matters
    severity = matters_severity(matters, observed, home_explicit(observed, declared))
    spark = _is_spark(observed, profile) and severity is not Severity.INFO
    ivy_ok = [d for d in ivy_dirs(observed, declared) if judge_writable(observed, d).writable]
    identity = observed.identity
    uid = f", uid {identity.uid.effective}" if identity.uid is not None else ""
    message = (f"The home directory of {observed.comm} (user {identity.user or 'unknown'}{uid}) "
               f"is unusable: {'; '.join(problems)}.")
    if severity is Severity.INFO:
        message += (f" The {profile.name} profile writes nothing under HOME, so this is "
                    "only a note.")
    elif spark and ivy_ok:
        message += (f" Tools that write under HOME fail; Ivy is already pointed at writable "
                    f"{', '.join(ivy_ok)}, so `spark-submit --packages` works, but anything "
                    "else writing to ~ (~/.cache, ~/.java, shell history) still fails.")
    elif spark:
        message += (" Tools that write under HOME fail: Ivy writes ~/.ivy2 for `spark-submit "
                    "--packages` and fails with FileNotFoundException "
                    "(kubeflow/spark-operator#2208).")
    else:
        message += " Tools that write under HOME fail."
    if severity is Severity.LOW:
        message += (" Low: no profile says this workload uses HOME, it is no JVM, and $HOME "
                    "was not set explicitly.")
    elif severity is None and ivy_ok:
        severity = Severity.LOW
    fix = _home_fix(observed, declared, profile, spark)
    yield HOME_DIRECTORY_UNUSABLE.finding(message, fix, severity, observed="; ".join(problems))


def _home_fix(observed: ObservedProcess, declared: DeclaredContainer | None, profile: Profile,
              spark: bool) -> str:
    """HOME (and Ivy) go to /tmp: the volume the pod mounts there when it has one, /tmp
    itself when the process can write it, else an emptyDir the fix adds there."""
    what = "HOME and Ivy (spark-submit --packages)" if spark else "HOME"
    # One env list: Helm replaces lists wholesale, so both variables go in together.
    more = (("SPARK_SUBMIT_OPTS", IVY_SUBMIT_OPTS),) if spark else ()
    env = env_fix(profile, "HOME", HOME_DIR, *more)
    end = (";\n# per application, spark.jars.ivy=/tmp/ivy2 in sparkConf does the Ivy part.\n"
           if spark else ":\n")
    mount = mount_at(declared, HOME_DIR)
    writable = judge_writable(observed, HOME_DIR, creatable=False).writable
    if mount is not None and writable is not False:
        return f"# Point {what} at the pod's {HOME_DIR} volume ({mount.name}){end}{env}"
    if writable:
        return f"# Point {what} at {HOME_DIR}, which the process can write{end}{env}"
    return (f"# Give the process a writable {HOME_DIR}, then point {what} there{end}"
            f"{writable_volume_fix(profile, declared, observed, HOME_DIR)}\n{env}")


HOME_DIRECTORY_UNUSABLE = Rule(
    "HomeDirectoryUnusable", Severity.MEDIUM,
    "the uid has no passwd entry, or its home / $HOME is missing or not writable (medium "
    "where HOME matters: the controller profile, a JVM, an explicit $HOME; else low; info "
    "for the webhook profile)",
    "tools that write under HOME fail (Ivy for spark-submit --packages)",
    "set HOME to a writable emptyDir, or SPARK_SUBMIT_OPTS=" + IVY_SUBMIT_OPTS,
    home_directory_unusable, facts=(Fact.UID, Fact.HOME, Fact.PATHS))

RULES = (RUNS_AS_ROOT, RUN_AS_USER_MISMATCH, RUN_AS_GROUP_MISMATCH, HOME_DIRECTORY_UNUSABLE)
