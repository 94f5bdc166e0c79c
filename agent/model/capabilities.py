"""Linux capabilities by name and bit, and their summaries."""

from __future__ import annotations

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
