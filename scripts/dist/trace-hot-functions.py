#!/usr/bin/env python3
"""trace-hot-functions.py: the functions a binary runs, in the order it first runs them.

    trace-hot-functions.py --binary BIN --out ORDER -- CMD [ARGS...] [--- CMD2 ...]

Runs each command (its argv[0] must be BIN) under ptrace with a one-shot breakpoint (int3) on
the entry of every function of BIN's symbol table. A breakpoint that fires is recorded, its
original byte put back, and the function resumes, so each function costs one trap however
often it runs. Children (fork, clone, vfork) are traced the same way until they exec another
program; the commands run one after another and share one order.

ORDER gets one mangled symbol per line, first-run order: the input of lld's
--symbol-ordering-file, which places those functions first and together. A short-lived
process then maps a few dense 64 KiB windows of text instead of touching most of the binary
(the kernel maps up to 16 pages around each page fault on a file), which is where most of a
front end's peak RSS goes (see scripts/build-dist.sh, which runs it).

Needs root or the right to ptrace the commands (they may call PR_SET_DUMPABLE 0), and nm.
Exit status: the first non-zero status of the commands, 0 otherwise.
"""
import argparse
import ctypes
import os
import signal
import subprocess
import sys

PTRACE_TRACEME, PTRACE_CONT, PTRACE_GETREGS, PTRACE_SETREGS = 0, 7, 12, 13
PTRACE_DETACH, PTRACE_SETOPTIONS, PTRACE_GETEVENTMSG = 17, 0x4200, 0x4201
O_TRACEFORK, O_TRACEVFORK, O_TRACECLONE, O_TRACEEXEC = 0x2, 0x4, 0x8, 0x10
O_EXITKILL = 0x100000
EV_FORK, EV_VFORK, EV_CLONE, EV_EXEC = 1, 2, 3, 4
RIP = 16  # index of rip in x86_64's struct user_regs_struct (27 unsigned longs)
WALL = 0x40000000  # __WALL: wait for clone children too

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


class Regs(ctypes.Structure):
    _fields_ = [("r", ctypes.c_ulong * 27)]


def ptrace(req, pid, addr=None, data=None):
    if libc.ptrace(req, pid, addr, data) == -1:
        e = ctypes.get_errno()
        raise OSError(e, "ptrace(%d, %d): %s" % (req, pid, os.strerror(e)))


def functions(binary):
    """(offset in the file's address space, name) of every sized text symbol."""
    out = subprocess.run(["nm", "-S", "--defined-only", binary], check=True,
                         capture_output=True, text=True).stdout
    funcs = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tTwWiI" and int(f[1], 16) > 0:
            funcs.setdefault(int(f[0], 16), f[3])
    return funcs


def load_base(pid, binary):
    """Where the kernel mapped BIN's file offset 0 in process PID (PIE: random)."""
    real = os.path.realpath(binary)
    with open("/proc/%d/maps" % pid) as m:
        for line in m:
            f = line.split()
            if len(f) >= 6 and f[5] == real and int(f[2], 16) == 0:
                return int(f[0].split("-")[0], 16)
    raise RuntimeError("%s is not mapped in process %d" % (binary, pid))


class Tracer:
    def __init__(self, binary):
        self.binary = binary
        self.funcs = functions(binary)
        self.order = []
        self.seen = set()
        self.base = {}  # pid -> load base, for the processes still running BIN

    def arm(self, pid):
        """Puts int3 on every function entry of process PID's copy of BIN."""
        base = load_base(pid, self.binary)
        self.base[pid] = base
        fd = os.open("/proc/%d/mem" % pid, os.O_RDWR | os.O_CLOEXEC)
        try:
            for off in self.funcs:
                if off not in self.seen:
                    os.pwrite(fd, b"\xcc", base + off)
        finally:
            os.close(fd)

    def trap(self, pid):
        """A SIGTRAP in PID: if it is one of our breakpoints, record and disarm it."""
        regs = Regs()
        ptrace(PTRACE_GETREGS, pid, None, ctypes.byref(regs))
        base = self.base.get(pid)
        if base is None:
            return False
        off = regs.r[RIP] - 1 - base
        name = self.funcs.get(off)
        if name is None:
            return False
        with open(os.path.realpath(self.binary), "rb") as f:
            f.seek(self.file_offset(off))
            orig = f.read(1)
        fd = os.open("/proc/%d/mem" % pid, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.pwrite(fd, orig, base + off)
        finally:
            os.close(fd)
        regs.r[RIP] -= 1
        ptrace(PTRACE_SETREGS, pid, None, ctypes.byref(regs))
        if off not in self.seen:
            self.seen.add(off)
            self.order.append(name)
        return True

    def file_offset(self, vaddr):
        if not hasattr(self, "_loads"):
            self._loads = []
            out = subprocess.run(["readelf", "-lW", self.binary], check=True,
                                 capture_output=True, text=True).stdout
            for line in out.splitlines():
                f = line.split()
                if f and f[0] == "LOAD":
                    self._loads.append((int(f[2], 16), int(f[1], 16), int(f[4], 16)))
        for va, fo, sz in self._loads:
            if va <= vaddr < va + sz:
                return fo + vaddr - va
        raise RuntimeError("address %#x is in no LOAD segment" % vaddr)

    def spawn(self, argv):
        pid = os.fork()
        if pid == 0:
            try:
                ptrace(PTRACE_TRACEME, 0)
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        _, st = os.waitpid(pid, 0)  # stopped at exec
        if not os.WIFSTOPPED(st):
            raise RuntimeError("%s did not start" % argv[0])
        ptrace(PTRACE_SETOPTIONS, pid, None, ctypes.c_void_p(
            O_TRACEFORK | O_TRACEVFORK | O_TRACECLONE | O_TRACEEXEC | O_EXITKILL))
        self.arm(pid)
        ptrace(PTRACE_CONT, pid)
        return pid

    def run(self, commands):
        """Runs the commands one after another; returns their exit statuses. Processes a
        command leaves behind (a created container's init) stay traced while the next ones
        run, until they exit or exec."""
        statuses = []
        queue = list(commands)
        live = set()
        main = self.spawn(queue.pop(0))
        live.add(main)
        while live:
            p, st = os.waitpid(-1, WALL)
            if os.WIFEXITED(st) or os.WIFSIGNALED(st):
                live.discard(p)
                self.base.pop(p, None)
                if p == main:
                    statuses.append(os.WEXITSTATUS(st) if os.WIFEXITED(st)
                                    else 128 + os.WTERMSIG(st))
                    if queue:
                        main = self.spawn(queue.pop(0))
                        live.add(main)
                continue
            if not os.WIFSTOPPED(st):
                continue
            sig, event = os.WSTOPSIG(st), st >> 16
            if p not in live:
                # The first stop of a new child (it may come before its parent's event).
                live.add(p)
                ptrace(PTRACE_CONT, p)
                continue
            if event in (EV_FORK, EV_VFORK, EV_CLONE):
                msg = ctypes.c_ulong()
                ptrace(PTRACE_GETEVENTMSG, p, None, ctypes.byref(msg))
                # The child runs the same copy of BIN (a copy of the parent's memory,
                # breakpoints included, or the very same memory).
                self.base[msg.value] = self.base.get(p)
                ptrace(PTRACE_CONT, p)
            elif event == EV_EXEC:
                # Another program now (the container's process): no longer ours to trace.
                self.base.pop(p, None)
                live.discard(p)
                ptrace(PTRACE_DETACH, p)
            elif sig == signal.SIGTRAP and event == 0 and self.trap(p):
                ptrace(PTRACE_CONT, p)
            else:
                ptrace(PTRACE_CONT, p, None, ctypes.c_void_p(sig if event == 0 else 0))
        return statuses


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("commands", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmds, cur = [], []
    for w in a.commands:
        if w in ("--", "---"):
            if cur:
                cmds.append(cur)
            cur = []
        else:
            cur.append(w)
    if cur:
        cmds.append(cur)
    if not cmds:
        ap.error("no command")
    t = Tracer(a.binary)
    rc = 0
    for argv, s in zip(cmds, t.run(cmds)):
        if s != 0:
            print("trace-hot-functions: %s exited %d" % (" ".join(argv), s), file=sys.stderr)
            rc = rc or s
    with open(a.out, "w") as f:
        f.write("".join(n + "\n" for n in t.order))
    print("trace-hot-functions: %d of %d functions ran" % (len(t.order), len(t.funcs)),
          file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
