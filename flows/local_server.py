"""The local Prefect API that `facedag run` uses when no PREFECT_API_URL is set.

Prefect then starts a temporary server in a subprocess (its "ephemeral" server) and gives it
PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (20 s) to answer. The first start on a new
PREFECT_HOME creates and migrates a SQLite database; measured here on 2 cores with three busy
processes beside it, that start took 55 s (a later one 17 s), so a fresh clone on a busy laptop
or CI box failed before any stage ran.

Why not a project-local server that facedag starts once and keeps: it would outlive the
command (a background process nobody asked for, holding a port and the database), and it
would need its own stop, port and stale-process bookkeeping. Prefect's temporary server is
what Prefect's users already get; it only needs the time to start. So facedag starts that same
server itself, before the flow, with:

- an allowance that fits a slow first migration (STARTUP_S, or the user's own
  PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS when larger);
- one line saying what is happening ("starting the local Prefect server; the first start sets
  up its database");
- one retry: a server that did not answer in time is stopped and started again (its migration
  is committed step by step, so the second start goes on from where the first got).

The flow then finds the server running (Prefect keeps one per process) and uses it. With
PREFECT_API_URL set (your own server, `facedag serve`), nothing is started.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

STARTUP_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_S = 300  # seconds per attempt: a first migration under heavy load, with room to spare
ATTEMPTS = 2


class LocalServerError(RuntimeError):
    """The local Prefect server did not come up, twice."""


_started: list[object] = []  # the server ensure_api started in this process, for stop_local_server


def startup_allowance() -> int:
    """Seconds one start may take: STARTUP_S, or more when the environment asks for more."""
    try:
        asked = int(os.environ.get(STARTUP_ENV, "0"))
    except ValueError:
        asked = 0
    return max(STARTUP_S, asked)


def database_exists() -> bool:
    """Whether the local server's SQLite database exists already (then it starts quickly)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url  # a SecretStr: it may hold a password
    url = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url or "")
    if not url.startswith("sqlite"):
        return True  # a database server: nothing to create here
    path = url.split("///", 1)[-1]
    return Path(path).expanduser().is_file()


def ensure_api(log: Callable[[str], None] = print, timeout: int | None = None, attempts: int = ATTEMPTS) -> str:
    """The API address the flow will use: PREFECT_API_URL, or a local server started here (see the
    module docstring). Raises LocalServerError with one line when it does not come up."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if url := PREFECT_API_URL.value():
        return str(url)
    server = SubprocessASGIServer()
    if server.running:
        return server.api_url
    allowance = timeout or startup_allowance()
    first = not database_exists()
    log("facedag: starting the local Prefect server" + ("; the first start sets up its database (this can take "
                                                        "a minute or more on a busy machine)" if first else ""))
    for attempt in range(1, attempts + 1):
        try:
            server.start(timeout=allowance)
            _started.append(server)
            return server.api_url
        except RuntimeError as exc:
            server.stop()  # the slow one must not linger beside its successor
            server = SubprocessASGIServer()
            if attempt == attempts:
                reason = " ".join(str(exc).split())[:300]
                raise LocalServerError(
                    f"the local Prefect server did not answer within {allowance} s, twice ({reason}); set "
                    f"{STARTUP_ENV} higher, or PREFECT_API_URL to a running server (facedag serve)") from None
            log(f"facedag: the local Prefect server did not answer within {allowance} s; starting it once more")
    raise AssertionError("unreachable")


def stop_local_server() -> None:
    """Stop the local server ensure_api started in this process, if any, after Prefect's log and
    event workers have sent what they hold (else they try again at exit, to a server gone)."""
    if not _started:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # stopping must go on whatever the workers say
            service.drain_all(timeout=30)
    while _started:
        _started.pop().stop()  # type: ignore[attr-defined]
