"""supervisord event listener: when the Celery worker enters FATAL (it kept dying at start-up,
e.g. a broker URL it cannot use), stop supervisord, so the container exits and its restart
policy takes over instead of leaving a running container with no worker in it.

Run by supervisord as ``python3 -m worker_service.supervisor_events`` (images/worker).
"""

from __future__ import annotations

import os
import signal
import sys

from supervisor import childutils  # type: ignore[import-untyped]


def main() -> None:
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        if headers["eventname"] == "PROCESS_STATE_FATAL":
            process, _ = childutils.eventdata(payload + "\n")
            print(f"[CELERY_WORKER] {process['processname']} entered FATAL: stopping "
                  "supervisord so the container exits and restarts", file=sys.stderr, flush=True)
            os.kill(os.getppid(), signal.SIGTERM)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
