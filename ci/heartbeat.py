#!/usr/bin/env python3
"""Run a command with its output passed through; when it has been quiet for a while, say it is alive.

    python3 ci/heartbeat.py --label pytest [--every 30] -- CMD [ARGS...]

Long steps (debootstrap, pip installs, the slowest Docker tests) can print nothing for a minute or
more, which in a CI log looks like a hang.  While CMD prints, its output goes through unchanged
(stderr merged into stdout); after --every seconds of silence one line is printed,
"[LABEL] still running: 95 s so far, quiet for 30 s", then one more every --every seconds while the
silence lasts.  The exit status is CMD's (128+N when a signal N killed it).  Python children run
unbuffered so that their own progress is not held back by the pipe.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="name printed in the heartbeat lines")
    parser.add_argument("--every", type=float, default=30.0, help="seconds of silence between heartbeats")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command: expected `-- CMD [ARGS...]` after the options")
    if args.every <= 0:
        parser.error(f"--every: expected a positive number of seconds, got {args.every}")

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    except OSError as exc:
        print(f"[{args.label}] cannot start {cmd[0]}: {exc}", file=sys.stderr)
        return 127
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))

    out = sys.stdout.buffer
    fd = proc.stdout.fileno()
    started = last_output = time.monotonic()
    next_beat = started + args.every
    at_line_start = True
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, next_beat - time.monotonic()))
        now = time.monotonic()
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out.write(chunk)
            out.flush()
            at_line_start = chunk.endswith(b"\n")
            last_output, next_beat = now, now + args.every
        elif now >= next_beat:
            line = (f"[{args.label}] still running: {now - started:.0f} s so far, "
                    f"quiet for {now - last_output:.0f} s\n")
            out.write((b"" if at_line_start else b"\n") + line.encode())
            out.flush()
            at_line_start = True
            next_beat = now + args.every
    rc = proc.wait()
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    sys.exit(main())
