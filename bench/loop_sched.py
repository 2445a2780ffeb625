"""Where the event-loop thread of a member under load spends its CPU in the kernel, and
who takes the CPU from it, with perf (kernel stacks; needs root or perf_event_paranoid <= 1).

    python bench/loop_sched.py [--clients 64] [--seconds 12] [--src DIR] [--client-group-nice N]

One member takes puts from --clients concurrent clients (bench/loadgen.py, as kv_bench
runs them); in the middle perf records for 3 s the loop thread's on-CPU samples
(cpu-clock), then for 3 s its context switches (sched:sched_switch) and its system
call exits. Prints:
- the loop thread's on-CPU time split by system call (by the kernel stack of each
  sample), user space and interrupts;
- its preemptions per second (switched out while runnable): to whom (the thread's name)
  and at which point (the interrupt, or the system call it was returning from: where the
  switch happened, which for a wake-up by another CPU is not what caused it), and its
  voluntary sleeps per second;
- its share of the wall time running, waiting for a CPU (runnable) and asleep, from a
  system-wide sched trace (`perf sched record -a`, 1.5 s): how much of its waiting was
  with another CPU idle (the scheduler left it queued behind the thread that took its
  CPU: a woken task is placed on an idle CPU, a queued one that ran recently is not
  pulled to one), how much of its running with the others idle (nothing else to do:
  the clients wait for it), whom it waited behind, and the machine's idle share.
  `--client-group-nice N` lowers the clients' weight (their autogroup's nice, this
  process's session) to see how much of the waiting is the CPU shared with them.

py-spy counts a preempted thread as busy in the Python function it was in, so a system
call that wakes another thread (a socket send waking a client, io_submit waking the
kernel's fdatasync worker) looks costly there; this tells CPU from preemption.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import preload, run_cell

from petcd.testing import PetcdProcess

# x86_64 system call numbers of the calls a member's loop makes (others: by number)
SYSCALLS = {0: "read", 1: "write", 20: "writev", 39: "getpid", 44: "sendto", 45: "recvfrom",
            46: "sendmsg", 75: "fdatasync", 202: "futex", 208: "io_getevents",
            209: "io_submit", 232: "epoll_wait", 277: "sync_file_range", 281: "epoll_pwait",
            296: "pwritev", 328: "pwritev2", 426: "io_uring_enter"}
_HEAD = re.compile(r"^\S+\s+(\d+)(?:\s+\[\d+\])?\s+[\d.]+:\s+(?:\d+\s+)?(\S+?):(?:\s+|$)(.*)$")
_SYS = re.compile(r"^(?:__x64_sys_|__do_sys_|__se_sys_|ksys_)")


def _syscall_of(frames: list[str]) -> str | None:
    """The system call a kernel stack (leaf first) is in: the frame below do_syscall_64."""
    if "do_syscall_64" not in frames:
        return None
    below = [f for f in frames[:frames.index("do_syscall_64")] if f != "x64_sys_call"]
    if not below:
        return "(syscall entry)"
    name = _SYS.sub("", below[-1])
    return _ALIASES.get(name, name)


_ALIASES = {"do_pwritev": "pwritev2", "exit_to_user_mode_loop": "(syscall exit)",
            "vm_mmap_pgoff": "mmap"}


def record(pid: int, seconds: float, out: Path, events: list[str]) -> None:
    subprocess.run(["perf", "record", "-q", "-g", "-t", str(pid), "-o", str(out), *events,
                    "--", "sleep", str(seconds)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# (separate runs: with tracepoints in the same run, cpu-clock lost its kernel stacks)
CPU_EVENTS = ["-e", "cpu-clock", "-F", "2000"]
SCHED_EVENTS = ["-c", "1", "-e", "sched:sched_switch", "-e", "raw_syscalls:sys_exit"]


def events(data: Path) -> list[tuple[str, str, list[str]]]:
    """(event name, its fields, kernel stack frames leaf first) in time order."""
    text = subprocess.run(["perf", "script", "-i", str(data)], check=True,
                          capture_output=True, text=True).stdout
    out = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").splitlines()
        m = _HEAD.match(lines[0]) if lines else None
        if m is None:
            continue
        frames = [ln.split()[1].split("+")[0] for ln in lines[1:] if len(ln.split()) > 1]
        out.append((m.group(2), m.group(3), frames))
    return out


def report(evs: list[tuple[str, str, list[str]]], seconds: float,
           ours: Collection[int] = ()) -> str:
    """The two tables from the events of both runs (each `seconds` long); ours: the
    member's thread ids (their names get a "member:" prefix)."""
    cpu: collections.Counter[str] = collections.Counter()
    preempt: collections.Counter[tuple[str, str]] = collections.Counter()
    sleeps = 0
    last_exit = "?"
    for name, fields, frames in evs:
        if name == "raw_syscalls:sys_exit":
            m = re.search(r"NR (\d+)", fields)
            nr = int(m.group(1)) if m else -1
            last_exit = SYSCALLS.get(nr, f"syscall {nr}")
        elif name.startswith("cpu-clock"):
            sys_ = _syscall_of(frames)
            if sys_ is not None:
                cpu[sys_] += 1
            elif any(f.startswith(("asm_", "irq", "__irq", "handle_softirqs")) for f in frames):
                cpu["(interrupts)"] += 1
            else:
                cpu["(user space)"] += 1
        elif name == "sched:sched_switch":
            if "prev_state=R" not in fields:
                sleeps += 1
                continue
            m = re.search(r"next_comm=(.+?) next_pid=(\d+)", fields)
            who = re.sub(r"[/:].*|-\d+$", "", m.group(1)) if m else "?"
            if m and int(m.group(2)) in ours:
                who = "member:" + who
            where = next((f for f in frames if f.startswith("asm_")), "")
            preempt[(who, where or f"on return from {last_exit}")] += 1
    total = sum(cpu.values()) or 1
    lines = [f"loop thread on CPU: {total} samples at 2000/s ({total / 2000 / seconds:.0%} "
             "of the time); share of its on-CPU time:"]
    lines += [f"  {k:24} {v / total:6.1%}" for k, v in cpu.most_common(16)]
    lines.append(f"preempted {sum(preempt.values()) / seconds:.0f}/s, slept (voluntary) "
                 f"{sleeps / seconds:.0f}/s; preemptions by who ran next and where:")
    lines += [f"  {v / seconds:7.0f}/s  {who:16} {where}" for (who, where), v in
              preempt.most_common(14)]
    return "\n".join(lines)


def record_system(seconds: float, out: Path) -> None:
    subprocess.run(["perf", "sched", "record", "-a", "-o", str(out), "--", "sleep",
                    str(seconds)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_SWITCH = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) .*prev_state=(\S+) ==> "
                     r"next_comm=(.*?) next_pid=(\d+)")
_PID_CPU = re.compile(r"pid=(\d+) .*(?:target_cpu|dest_cpu)=(\d+)")


def cpu_share(data: Path, loop: int, ours: Collection[int]) -> str:
    """The loop thread's running / waiting / sleeping split from a system-wide trace of
    switches, wake-ups and migrations, and what the other CPUs did meanwhile."""
    text = subprocess.run(["perf", "script", "-i", str(data), "-F", "cpu,time,event,trace"],
                          check=True, capture_output=True, text=True).stdout
    running: dict[int, tuple[int, str]] = {}  # cpu -> (pid, comm) on it
    state, queued = "sleep", -1  # the loop's state and the CPU it runs or waits on
    acc: collections.Counter[str] = collections.Counter()
    behind: collections.Counter[str] = collections.Counter()
    ncpu = os.cpu_count() or 1
    last: float | None = None
    for line in text.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or not parts[0].startswith("["):
            continue
        cpu, t, event, fields = int(parts[0].strip("[]")), float(parts[1].rstrip(":")), \
            parts[2], parts[3]
        if last is not None and len(running) == ncpu:  # (once every CPU was seen)
            dt = t - last
            acc["total"] += dt
            idle = {c for c, (pid, _) in running.items() if pid == 0}
            acc["idle"] += len(idle) * dt
            others_idle = bool(idle - {queued})
            acc[state] += dt
            if others_idle:
                acc[state + " other idle"] += dt
            if state == "wait":
                pid, comm = running.get(queued, (-1, "?"))
                who = re.sub(r"[/:].*|-\d+$", "", comm)
                behind["member:" + who if pid in ours else who] += dt
        last = t
        if event.startswith("sched:sched_switch"):
            m = _SWITCH.search(fields)
            if m is None:
                continue
            running[cpu] = (int(m.group(5)), m.group(4))
            if int(m.group(2)) == loop:
                state = "wait" if m.group(3).startswith("R") else "sleep"
                queued = cpu
            if int(m.group(5)) == loop:
                state, queued = "run", cpu
        elif event.startswith(("sched:sched_waking", "sched:sched_migrate_task")):
            m = _PID_CPU.search(fields)
            if m is not None and int(m.group(1)) == loop:
                queued = int(m.group(2))
                if event.startswith("sched:sched_waking") and state == "sleep":
                    state = "wait"
    total = acc["total"] or 1.0
    lines = [f"loop thread over {total:.2f} s (system-wide sched trace): "
             f"running {acc['run'] / total:.0%} ({acc['run other idle'] / total:.0%} of the "
             f"time with another CPU idle), waiting for a CPU {acc['wait'] / total:.0%} "
             f"({acc['wait other idle'] / total:.0%} with another CPU idle), asleep "
             f"{acc['sleep'] / total:.0%} ({acc['sleep other idle'] / total:.0%}); "
             f"machine idle {acc['idle'] / total:.2f} of {ncpu} CPUs",
             "its waiting, by who ran on its CPU (share of the time):"]
    lines += [f"  {v / total:6.1%}  {who}" for who, v in behind.most_common(8)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=12.0,
                    help="load time (perf: 7.5 s of it, from 2 s in)")
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"),
                    help="petcd source dir to run instead of this one")
    ap.add_argument("--client-group-nice", type=int, default=None,
                    help="the clients' autogroup nice (this session's; 0 afterwards)")
    args = ap.parse_args()
    window = 3.0
    with tempfile.TemporaryDirectory(prefix="loop-sched-") as tmp:
        # (bench/stagetrace's sitecustomize puts PETCD_SRC first; it traces nothing unless
        # PETCD_STAGES_OUT is set)
        m = PetcdProcess(Path(tmp) / "m", env={
            **os.environ, "PETCD_SRC": args.src,
            "PYTHONPATH": str(Path(__file__).resolve().parent / "stagetrace")})
        cpu_data, sched_data = Path(tmp) / "cpu.data", Path(tmp) / "sched.data"
        system_data = Path(tmp) / "system.data"
        try:
            m.start()
            preload(m.address, 256)
            assert m.proc is not None
            pid = m.proc.pid  # (its main thread runs the event loop)

            def later() -> None:
                time.sleep(2.0)  # (the clients connected and going)
                record_system(1.5, system_data)
                record(pid, window, cpu_data, CPU_EVENTS)
                record(pid, window, sched_data, SCHED_EVENTS)
            perf = threading.Thread(target=later)
            if args.client_group_nice is not None:  # (the workers are spawned in it)
                Path("/proc/self/autogroup").write_text(str(args.client_group_nice))
            try:
                perf.start()
                cell = run_cell([m], [m.address], "put", args.clients, 2, args.seconds, 256)
                perf.join()
            finally:
                if args.client_group_nice is not None:
                    Path("/proc/self/autogroup").write_text("0")
            ours = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
        finally:
            m.stop()
        print(f"{args.clients} clients: {cell.rate:.0f} puts/s, server "
              f"{cell.server_cpu / cell.seconds:.2f} cores, load {os.getloadavg()[0]:.1f}")
        print(report(events(cpu_data) + events(sched_data), window, ours))
        print(cpu_share(system_data, pid, ours))


if __name__ == "__main__":
    main()
