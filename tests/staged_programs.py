"""The programs `Stage.spawn` (tests/staging.py) runs inside a staged process, as the text
given to `python3 -c`: a listener, a parent of a zombie, and the last wrapper before a
staged program, which tells staging the moment that program runs."""

# Runs inside the staged process: bind the requested sockets, optionally install an
# allow-all seccomp filter, report the fds on stdout, then wait to be killed.
LISTENER_CODE = r"""
import ctypes, json, signal, socket, sys
spec = json.loads(sys.argv[1])
socks = []
try:
    for s in spec["sockets"]:
        fam = socket.AF_INET6 if s["family"] == 6 else socket.AF_INET
        typ = socket.SOCK_STREAM if s["proto"] == "tcp" else socket.SOCK_DGRAM
        k = socket.socket(fam, typ)
        k.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if s.get("v6only") is not None:
            k.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(s["v6only"]))
        if s.get("device"):
            k.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, s["device"].encode())
        k.bind((s["addr"], s["port"]))
        if typ == socket.SOCK_STREAM:
            k.listen(64)
        socks.append(k)
    if spec.get("comm"):
        ctypes.CDLL(None).prctl(15, spec["comm"].encode()[:15], 0, 0, 0)  # PR_SET_NAME
    if spec.get("seccomp"):
        class Filter(ctypes.Structure):
            _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                        ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
        class Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]
        allow = (Filter * 1)(Filter(0x06, 0, 0, 0x7FFF0000))  # BPF_RET|BPF_K, SECCOMP_RET_ALLOW
        prog = Prog(1, allow)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, MODE_FILTER
            raise OSError(ctypes.get_errno(), "seccomp")
except OSError as e:
    print("ERROR " + str(e), flush=True)
    sys.exit(3)
print(json.dumps({"fds": [k.fileno() for k in socks]}), flush=True)
while True:
    signal.pause()
"""


# Forks a child that exits at once and is never reaped; prints the child's pid.
ZOMBIE_PARENT = r"""
import os, signal
child = os.fork()
if child == 0:
    os._exit(0)
print(child, flush=True)
signal.pause()
"""


# Runs last before a staged program, under all of `Stage.spawn`'s wrappers (ip netns exec,
# unshare, sh -c, chroot, setpriv, each exec'ing the next), all of which keep the readiness
# pipe's write end open: writes one byte, marks the pipe close-on-exec, then execs the program.
# The kernel closes the pipe at that exec (fs/exec.c do_close_on_exec), so the reader's EOF
# is the moment the program runs; a failed exec writes its error instead.
EXEC_NOTIFY = r"""
import os, sys
fd = int(sys.argv[1])
os.write(fd, b".")
os.set_inheritable(fd, False)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as e:
    os.write(fd, str(e).encode())
    sys.exit(127)
"""
