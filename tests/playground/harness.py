"""Drive `petcd playground` (a real process, real members) through its page in Debian's
chromium, and read back what the page shows: the data-* attributes of the cards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Browser, Page, sync_playwright

from petcd.testing import SRC_DIR

CHROMIUM = os.environ.get("PETCD_TEST_CHROMIUM", "/usr/bin/chromium")
# We run as root, offline: no sandbox, nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic",
                 "--disable-default-apps", "--disable-extensions"]
WAIT = 45.0  # seconds any one condition may take on a loaded 2-core machine

T = TypeVar("T")


@contextlib.contextmanager
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        # generous: a cold chromium on a busy 2-core machine is slow to come up
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=120_000)
        try:
            yield b
        finally:
            b.close()


class Playground:
    """`python -m petcd playground` on a free port; stopped (SIGTERM) at the end."""

    def __init__(self, members: int, data_dir: Path) -> None:
        self.data_dir = data_dir
        env = dict(os.environ, PYTHONPATH=str(SRC_DIR))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "petcd", "playground", "--members", str(members),
             "--port", "0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True)
        self.output: list[str] = []
        self.leftovers = False
        self.url = ""
        self.client_urls: dict[str, str] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            words = line.split()
            if words[:1] == ["page:"]:
                self.url = words[1]
            elif len(words) >= 2 and words[-1].startswith("http://") and words[-2][:1] == "m":
                self.client_urls[words[-2]] = words[-1]
            if line.startswith("Ctrl-C"):
                break
        if not self.url:
            raise AssertionError("playground did not start:\n" + "".join(self.output))

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C would; returns the exit code. Its members share its process
        group: anything of the group still there afterwards is killed and counted in
        `leftovers` (a clean stop leaves nothing)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.leftovers = False
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            pass
        else:
            self.leftovers = True
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.stdout is not None:
            self.output.append(self.proc.stdout.read())
        return self.proc.returncode

    def logs(self) -> str:
        out = ["".join(self.output)]
        out.extend(f"===== {log.name} =====\n{log.read_text(errors='replace')[-6000:]}"
                   for log in sorted(self.data_dir.glob("*.log")))
        return "\n".join(out)


@dataclass
class Card:
    name: str
    role: str
    state: str
    term: int
    commit: int
    client_url: str
    entries: dict[int, bool]  # index -> committed, as the log strip shows it


_READ = """() => [...document.querySelectorAll('[data-member]')].map(c => ({
  name: c.dataset.member, role: c.dataset.role, state: c.dataset.state,
  term: c.dataset.term, commit: c.dataset.commit, url: c.dataset.clientUrl,
  entries: [...c.querySelectorAll('[data-entry]')].map(
      e => [Number(e.dataset.index), e.dataset.committed === 'true'])}))"""


def cards(page: Page) -> dict[str, Card]:
    out = {}
    for c in page.evaluate(_READ):
        out[c["name"]] = Card(c["name"], c["role"], c["state"], int(c["term"] or 0),
                              int(c["commit"] or 0), c["url"],
                              {int(i): bool(ok) for i, ok in c["entries"]})
    return out


def wait_for(what: str, check: Callable[[], T | None], timeout: float = WAIT) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def one_leader(page: Page, *, above_term: int = 0, among: set[str] | None = None
               ) -> tuple[str, int]:
    """Waits until the page shows exactly one leader (in `among`, at a term above
    `above_term`) and every other running member following it in that term."""

    def check() -> tuple[str, int] | None:
        cs = cards(page)
        leaders = [c for c in cs.values() if c.role == "leader" and c.state != "killed"]
        if len(leaders) != 1:
            return None
        ld = leaders[0]
        if ld.term <= above_term or (among is not None and ld.name not in among):
            return None
        others = [c for c in cs.values() if c.state == "running" and c is not ld]
        if any(c.role != "follower" or c.term != ld.term for c in others):
            return None
        return ld.name, ld.term

    return wait_for("one leader", check)


def act(page: Page, member: str, action: str) -> None:
    page.locator(f'[data-member="{member}"] [data-action="{action}"]').click()


def put(page: Page, key: str, value: str, via: str = "") -> None:
    """Submit the put form (via "" = the leader); see put_result for the outcome."""
    form = page.locator('[data-action="put"]')
    form.locator('[name="key"]').fill(key)
    form.locator('[name="value"]').fill(value)
    form.locator('[name="member"]').select_option(via)
    form.locator('button[type="submit"]').click()


def put_result(page: Page, key: str) -> bool:
    """Waits for the answer to the last put of `key`; True if it was written."""
    out = page.locator(f'[data-put-result][data-put-key="{key}"]:is([data-ok="true"],'
                       '[data-ok="false"])')
    out.wait_for(timeout=WAIT * 1000)
    return out.get_attribute("data-ok") == "true"


def border_style(page: Page, member: str, index: int) -> str:
    return str(page.locator(f'[data-member="{member}"] [data-entry][data-index="{index}"]')
               .evaluate("e => getComputedStyle(e).borderTopStyle"))
