"""Failpoints: named places where a test can make a real process die or stall.

`OPTALLOC_FAILPOINT=NAME:kill` sends SIGKILL to this process when it reaches `failpoint(NAME)`;
`NAME:sleep=S` sleeps S seconds there. Unset (always, outside tests), a failpoint does nothing.
The crash-safety tests use them to kill the nightly job inside a round's transaction and between rounds.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "OPTALLOC_FAILPOINT"


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    where, _, action = spec.partition(":")
    if where != name:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep="):
        time.sleep(float(action.removeprefix("sleep=")))
