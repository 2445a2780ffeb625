"""A process's memory as /proc reports it, for tests and benchmarks that bound what a
member holds (e.g. while it answers a large range)."""

from __future__ import annotations

import threading


def proc_mem(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and VmHWM of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[name] = int(rest.split()[0]) * 1024
    return out


class PeakAnon:
    """Samples a process's anonymous RSS every `every` seconds in a thread while in use
    (`with PeakAnon(pid) as p:`): before, peak, after, and growth (peak - before)."""

    def __init__(self, pid: int, every: float = 0.001) -> None:
        self.pid = pid
        self.every = every
        self.before = self.peak = self.after = proc_mem(pid)["RssAnon"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_mem(self.pid)["RssAnon"])
            self._stop.wait(self.every)

    def __enter__(self) -> PeakAnon:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.after = proc_mem(self.pid)["RssAnon"]
        self.peak = max(self.peak, self.after)

    @property
    def growth(self) -> int:
        return self.peak - self.before
