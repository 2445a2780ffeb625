"""`petcd playground`: a local cluster of real petcd member processes, faults a user can
inject into it, and a live web page showing what Raft does.

    runner.py    the member processes (start, SIGKILL, restart, SIGSTOP/SIGCONT)
    proxy.py     the peer-traffic proxies that isolate and heal members
    observer.py  polls every member's /debug/raft, keeps the timeline, the KV view (watch)
    web.py       the page and its JSON/SSE/control endpoints (only in this process)
    static/      the page: plain HTML/CSS/JS, no build step, nothing fetched from elsewhere
    cli.py       the `petcd playground` command

The playground talks to members as any client does (HTTP, gRPC), and to their peer links
only through its proxies: no fault code runs inside a member.
"""
