"""Injected faults for the fault-matrix tests: an environment switch naming a point.

``OPS_RUNNER_FAULT="<action>@<point>"`` (several separated by commas). Actions:

- ``crash``: the process kills itself with SIGKILL at the point (a killed process, power loss
  as far as this process's own writes go);
- ``hang``: the process blocks there for ever, as a zmq ``term()`` or a dead socket would;
- ``enospc``: raise ``OSError(ENOSPC)`` there, as a disk that fills mid-write does.

Only tests set it. ``inject(point)`` sits at each named boundary; with the variable unset it
costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal
import threading

ENV = "OPS_RUNNER_FAULT"
ACTIONS = ("crash", "hang", "enospc")


def inject(point: str) -> None:
    """Do what ``OPS_RUNNER_FAULT`` asks at ``point``; nothing when it names another point."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        action, _, where = item.strip().partition("@")
        if where != point:
            continue
        if action == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "hang":
            threading.Event().wait()
        elif action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), point)
