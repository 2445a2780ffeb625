"""`petcd playground [--members 3|5|7] [--port 8080] [--data-dir DIR]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from petcd.playground.observer import Observer
from petcd.playground.runner import Cluster
from petcd.playground.web import WebServer


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="petcd playground",
        description="Start a local cluster of real petcd members and a web page that shows "
                    "Raft at work on them, with faults you can inject (kill, restart, pause, "
                    "resume, isolate, heal).")
    p.add_argument("--members", type=int, choices=(1, 3, 5, 7), default=3,
                   help="how many members to start (default 3)")
    p.add_argument("--port", type=int, default=8080,
                   help="serve the page on 127.0.0.1:PORT (default 8080; 0: any free port)")
    p.add_argument("--data-dir", default="",
                   help="keep the members' data here (default: a temporary directory removed "
                        "on exit); a playground started again on it finds its members again")
    return p.parse_args(list(argv))


async def run(args: argparse.Namespace) -> int:
    temp = not args.data_dir
    data_dir = Path(tempfile.mkdtemp(prefix="petcd-playground-") if temp else args.data_dir)
    cluster = Cluster(data_dir, args.members)
    if len(cluster.members) != args.members:
        print(f"petcd playground: {data_dir} holds a playground of {len(cluster.members)} "
              f"members: starting those (--members {args.members} ignored)", file=sys.stderr)
    observer = Observer(cluster)
    web = WebServer(cluster, observer, args.port)
    try:
        await web.start()  # first: a taken port fails before any member starts
    except OSError as e:
        print(f"petcd playground: cannot serve on 127.0.0.1:{args.port}: {e.strerror} "
              "(choose another with --port)", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await cluster.start()
        observer.start()
        observer.event("up", f"playground started with {len(cluster.members)} members")
        ms = list(cluster.members.values())
        width = max(len(m.name) for m in ms)
        print(f"petcd playground: {len(ms)} members, data in {data_dir}")
        print(f"  page:    {web.url}")
        for i, m in enumerate(ms):
            label = "members:" if i == 0 else ""
            print(f"  {label:<8} {m.name:<{width}}  {m.client_url}")
        endpoints = ",".join(m.client_url for m in ms)
        print(f"  etcdctl: ETCDCTL_API=3 etcdctl --endpoints={endpoints} member list")
        print("Ctrl-C stops every member.", flush=True)
        await stop.wait()
    finally:
        print("stopping the members...", flush=True)
        await web.stop()
        await observer.stop()
        await cluster.stop()
        if temp:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def main(argv: Sequence[str]) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(asyncio.run(run(args)))
