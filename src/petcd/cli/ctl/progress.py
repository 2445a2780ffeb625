"""The progress bar etcdctl's `check perf` and `check datascale` print on stdout
(cheggaaa/pb v1 with the "Bom !" format): every 200 ms "\\r" + " cur / total " + the bar
(only on a terminal: its width) + " ddd.dd%" + " 00m59s" (time left), and when finished
the elapsed time as Go prints a duration ("1m0s") and a newline."""

from __future__ import annotations

import shutil
import sys
import threading
import time

REFRESH = 0.2
START, CURRENT, CURRENT_N, EMPTY, END = "B", "o", "m", " ", "!"


def go_duration(seconds: int) -> str:
    """time.Duration.String() of a whole number of seconds."""
    if seconds == 0:
        return "0s"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def _left(seconds: int) -> str:
    out = ""
    if seconds > 86400:
        out = f"{seconds // 86400}d"
        seconds %= 86400
    if seconds > 3600:
        out += f"{seconds // 3600}h"
        seconds %= 3600
    return out + f"{seconds // 60:02d}m{seconds % 60:02d}s"


class Bar:
    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0
        self._previous = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._width = shutil.get_terminal_size((0, 0)).columns if sys.stdout.isatty() else 0
        self._start = self._change = time.monotonic()
        self._thread: threading.Thread | None = None

    def start(self) -> Bar:
        self._start = self._change = time.monotonic()
        self._update()
        self._thread = threading.Thread(target=self._refresh, daemon=True)
        self._thread.start()
        return self

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.current += n

    def _refresh(self) -> None:
        while not self._done.wait(REFRESH):
            self._update()

    def _update(self) -> None:
        with self._lock:
            cur = self.current
        if cur != self._previous:
            self._change = time.monotonic()
            self._previous = cur
        self._write(cur, finished=False)

    def _write(self, cur: int, finished: bool) -> None:
        total = self.total
        percent = f" {cur / (total / 100) if total else cur / 100:6.2f}%"
        counters = f" {cur} / {total} "
        now = time.monotonic()
        left = ""
        if finished:
            left = " " + go_duration(int(now - self._start))
        elif cur > 0 and total > 0:
            per = (self._change - self._start) / cur
            secs = int((total - cur) * per - (now - self._change))
            if secs > 0:
                left = " " + _left(secs)
        bar = ""
        size = self._width - len(counters + START + END + percent + left)
        if size > 0 and total > 0:
            filled = min(size, -(-cur * size // total))
            empty = max(0, size - filled)
            bar = START
            if empty <= 0:
                bar += CURRENT * filled
            elif filled > 0:
                bar += CURRENT * (filled - 1) + CURRENT_N
            bar += EMPTY * empty + END
        out = counters + bar + percent + left
        pad = " " * (self._width - len(out)) if len(out) < self._width else ""
        sys.stdout.write("\r" + out + pad)
        sys.stdout.flush()

    def finish(self) -> None:
        if self._done.is_set():
            return
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            cur = self.current
        self._write(cur, finished=True)
        sys.stdout.write("\n")
        sys.stdout.flush()
