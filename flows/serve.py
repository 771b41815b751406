"""`facedag serve`: a Prefect server, the two deployments, and the workers that run them.

Connects to the Prefect server at http://HOST:PORT/api when one answers there, else starts one
(`prefect server start`, analytics off, its own process group). Then it makes sure the work pools
exist, `cpu` (the data stages, convert, render) and `gpu` (train), both of type `process`, and
registers from the project folder:

- `pipeline` (flows/pipeline.py) on `cpu`: the whole DAG, on demand;
- `train-session` (flows/train_session.py) on `gpu`: one training session every
  `schedule_minutes` (or on a cron), each `session_minutes` long, with a concurrency limit of 1
  so sessions never overlap (a session that comes due while one runs waits for it).

Unless told not to, it starts one worker per pool and blocks until Ctrl-C. Stopping cancels the
runs still in progress first (their train stage checkpoints on the SIGTERM this causes), then
stops the workers, then the server if it started it.

It binds to 127.0.0.1 unless told otherwise: the Prefect API runs flows on the workers, so it is
as good as a shell on them. Elsewhere, set PREFECT_SERVER_API_AUTH_STRING (the server then asks
every request for it; facedag passes it on to its own clients and workers as
PREFECT_API_AUTH_STRING) and put TLS in front.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import httpx

from flows.local_server import database_exists, startup_allowance

CPU_POOL, GPU_POOL = "cpu", "gpu"
PIPELINE_DEPLOYMENT, SESSION_DEPLOYMENT = "pipeline", "train-session"
PIPELINE_FLOW, SESSION_FLOW = "facedag-pipeline", "facedag-train-session"  # the @flow names
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
SERVER_AUTH_ENV, CLIENT_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING"
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}
VENV_BIN = Path(sys.executable).parent
STOP_GRACE_S = 5.0  # seconds a worker or the server has to stop on SIGTERM before SIGKILL


def api_url(host: str, port: int) -> str:
    """The API address clients use: a wildcard bind address is reached through the loopback."""
    client_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in client_host:  # a bare IPv6 address
        client_host = f"[{client_host}]"
    return f"http://{client_host}:{port}/api"


def client_auth() -> str | None:
    """The auth string clients send: PREFECT_API_AUTH_STRING, else the server's own one (same machine)."""
    return os.environ.get(CLIENT_AUTH_ENV) or os.environ.get(SERVER_AUTH_ENV) or None


def auth_headers(auth: str | None) -> dict[str, str]:
    """The HTTP Basic header Prefect's server checks (the auth string, base64-encoded)."""
    if not auth:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def server_answers(url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers its health check at `url` (the check needs no auth)."""
    try:
        response = httpx.get(f"{url}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def child_env(url: str | None = None) -> dict[str, str]:
    """Environment of the server and workers: this venv first on PATH, telemetry off, our API and auth."""
    env = dict(os.environ, **TELEMETRY_OFF)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if url is not None:
        env["PREFECT_API_URL"] = url
        if auth := client_auth():
            env[CLIENT_AUTH_ENV] = auth
    return env


def _stoppable_children() -> None:
    """Make sure the children started next can be stopped by a signal.

    A command started in the background by a non-interactive shell has SIGINT ignored, and an
    ignored signal stays ignored across exec (handlers do not). Prefect's worker answers SIGTERM
    by sending itself SIGINT: with SIGINT ignored it never stops (measured: still running after
    10 minutes; with SIGINT at its default, it stops in 0.5 s). So SIGINT gets a handler here
    before any child starts.
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _spawn(cmd: list[str], env: dict[str, str], log_file: Path | None, stack: ExitStack,
           cwd: str | None = None) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own process group (Ctrl-C reaches only serve, which stops it in order)."""
    out: IO[bytes] | None = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = stack.enter_context(log_file.open("ab"))
    _stoppable_children()
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop_processes(procs: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the processes' groups all at once, then SIGKILL what is left after `grace` seconds.

    All at once: stopping one after the other added each one's grace (Ctrl-C took 110 s). By
    now the runs they were executing have been cancelled (and have checkpointed), so a worker
    that does not stop in time has nothing left to lose.
    """
    live = [p for p in procs if p.poll() is None]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 10.0)
        for proc in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        live = [p for p in live if p.poll() is None]
        if not live:
            return


def wait_for_server(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Poll /health until it answers; fail early when the server process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server_answers(url):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with status {proc.returncode} before answering at {url}")
        time.sleep(0.5)
    raise TimeoutError(f"no Prefect server answered at {url} within {timeout:g} s")


def schedule_defaults(root: str | Path) -> float:
    """train.session_minutes from the project's params.yaml."""
    from facedag.params import load_params

    return float(load_params(Path(root) / "params.yaml").train.session_minutes)


@dataclass
class Serving:
    """What `serving` set up: the API address, the deployments, and the processes it started."""

    url: str
    root: str
    started_server: bool
    deployments: dict[str, UUID]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


def ensure_pools(client: Any, names: tuple[str, ...] = (CPU_POOL, GPU_POOL)) -> list[str]:
    """Create the `process` work pools that are missing; returns the names created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    created = []
    for name in names:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=name, type=ProcessWorker.type,
                base_job_template=ProcessWorker.get_default_base_job_template(),
                description="facedag: the data stages, convert and render" if name == CPU_POOL
                else "facedag: training sessions (a machine with a GPU)",
            ))  # fmt: skip
            created.append(name)
    return created


def register_deployments(root: str, session_minutes: float, schedule_minutes: float | None,
                         cron: str | None) -> dict[str, UUID]:
    """Deploy `pipeline` (on cpu) and `train-session` (on gpu, scheduled, one at a time) from `root`.

    The flows are loaded from the project folder (from_source), and runs start in that folder:
    a worker on another machine needs the project at the same path (a clone; README "Working as a team").
    """
    from prefect import flow

    common: dict[str, Any] = dict(job_variables={"working_dir": root}, tags=["facedag"], print_next_steps=False,
                                  ignore_warnings=True)
    pipeline = flow.from_source(source=root, entrypoint="flows/pipeline.py:pipeline").deploy(
        name=PIPELINE_DEPLOYMENT, work_pool_name=CPU_POOL, parameters={"root": root},
        description="the whole facedag DAG (DVC skips what is up to date)", **common)
    schedule: dict[str, Any] = ({"cron": cron} if cron else
                                {"interval": timedelta(minutes=schedule_minutes or session_minutes)})
    session = flow.from_source(source=root, entrypoint="flows/train_session.py:train_session").deploy(
        name=SESSION_DEPLOYMENT, work_pool_name=GPU_POOL, parameters={"root": root, "minutes": session_minutes},
        concurrency_limit=1, description="one training session: train, checkpoint, exit; the next one resumes",
        **schedule, **common)
    return {PIPELINE_DEPLOYMENT: pipeline, SESSION_DEPLOYMENT: session}


def cancel_active_runs(client: Any, deployment_ids: list[UUID], timeout: float = 90.0,
                       log: Callable[[str], None] = print) -> int:
    """Cancel the deployments' running/pending runs and wait (bounded) until they are final.

    The worker turns the cancellation into a SIGTERM to the run, which reaches the train stage
    (through run_stage) as a SIGTERM: it checkpoints before it exits.
    """
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    active = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
        any_=[StateType.RUNNING, StateType.PENDING, StateType.CANCELLING])))
    deployments = DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids))
    runs = client.read_flow_runs(flow_run_filter=active, deployment_filter=deployments)
    for run in runs:
        if run.state and run.state.type != StateType.CANCELLING:
            log(f"facedag serve: cancelling {run.name} (it checkpoints first)")
            client.set_flow_run_state(run.id, Cancelling(), force=True)
    deadline = time.monotonic() + timeout
    while runs and time.monotonic() < deadline:
        time.sleep(1.0)
        runs = client.read_flow_runs(flow_run_filter=active, deployment_filter=deployments)
    return len(runs)


@contextmanager
def serving(host: str = "127.0.0.1", port: int = 4200, schedule_minutes: float | None = None,
            session_minutes: float | None = None, workers: bool = True, root: str | Path = ".",
            cron: str | None = None, log_dir: str | Path | None = None, startup_timeout: float | None = None,
            log: Callable[[str], None] = print) -> Iterator[Serving]:
    """Set up the server, pools, deployments and workers; on exit stop what it started (runs first)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    root = str(Path(root).resolve())
    if not (Path(root) / "dvc.yaml").exists():
        raise FileNotFoundError(f"{root} has no dvc.yaml: run facedag serve from the project (or pass --root)")
    if host not in LOCAL_HOSTS:
        log(f"facedag serve: WARNING: binding to {host}: anyone who reaches {host}:{port} can run flows on the "
            f"workers" + ("" if os.environ.get(SERVER_AUTH_ENV) else f"; set {SERVER_AUTH_ENV}"))
    session_minutes = session_minutes if session_minutes is not None else schedule_defaults(root)
    url = api_url(host, port)
    logs = Path(log_dir) if log_dir is not None else None
    with ExitStack() as stack:
        served = Serving(url, root, started_server=False, deployments={})

        def stop_all() -> None:  # the workers together, then the server they talk to
            stop_processes([p for n, p in served.processes.items() if n != "server"])
            stop_processes([p for n, p in served.processes.items() if n == "server"])

        stack.callback(stop_all)
        if server_answers(url):
            log(f"facedag serve: using the Prefect server at {url}")
        else:
            cmd = [str(VENV_BIN / "prefect"), "server", "start", "--host", host, "--port", str(port),
                   "--analytics-off"]
            log(f"facedag serve: starting a Prefect server on {host}:{port}"
                + ("" if database_exists() else "; the first start sets up its database"))
            served.processes["server"] = _spawn(cmd, child_env(), logs / "server.log" if logs else None, stack)
            served.started_server = True
            wait_for_server(url, served.processes["server"], startup_timeout or startup_allowance())
        settings = {PREFECT_API_URL: url}
        if auth := client_auth():
            settings[PREFECT_API_AUTH_STRING] = auth
        with temporary_settings(updates=settings):
            with get_client(sync_client=True) as client:
                created = ensure_pools(client)
                if created:
                    log(f"facedag serve: created work pools {', '.join(created)}")
            served.deployments = register_deployments(root, session_minutes, schedule_minutes, cron)
            every = f"cron {cron!r}" if cron else f"every {schedule_minutes or session_minutes:g} min"
            log(f"facedag serve: deployments {PIPELINE_DEPLOYMENT} (pool {CPU_POOL}) and {SESSION_DEPLOYMENT} "
                f"(pool {GPU_POOL}, {every}, {session_minutes:g} min each, one at a time)")
            if workers:
                for pool in (CPU_POOL, GPU_POOL):
                    cmd = [str(VENV_BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"]
                    served.processes[f"worker-{pool}"] = _spawn(
                        cmd, child_env(url), logs / f"worker-{pool}.log" if logs else None, stack, cwd=root)
                log(f"facedag serve: workers started for pools {CPU_POOL} and {GPU_POOL}")
            try:
                yield served
            finally:
                if workers and any(p.poll() is None for n, p in served.processes.items() if n.startswith("worker")):
                    try:
                        with get_client(sync_client=True) as client:
                            left = cancel_active_runs(client, list(served.deployments.values()), log=log)
                        if left:
                            log(f"facedag serve: {left} run(s) still active after cancelling; stopping anyway")
                    except Exception as exc:  # the server may be gone already: stopping must go on
                        log(f"facedag serve: could not cancel the runs in progress: {exc}")


def serve(host: str = "127.0.0.1", port: int = 4200, schedule_minutes: float | None = None,
          session_minutes: float | None = None, workers: bool = True, root: str | Path = ".",
          cron: str | None = None, log_dir: str | Path | None = None) -> int:
    """`facedag serve`: set everything up, then block until Ctrl-C (or SIGTERM), then stop it all."""
    def on_stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    # both explicit: a serve started in the background has SIGINT ignored (see _stoppable_children)
    old = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with serving(host, port, schedule_minutes, session_minutes, workers, root, cron, log_dir) as served:
            print(f"facedag serve: the Prefect UI is at {served.url.removesuffix('/api')}  (Ctrl-C stops)", flush=True)
            try:
                while True:
                    for name, proc in served.processes.items():
                        if proc.poll() is not None:
                            raise RuntimeError(f"{name} exited with status {proc.returncode}")
                    time.sleep(2.0)
            except KeyboardInterrupt:
                print("facedag serve: stopping (runs in progress checkpoint first)", flush=True)
        print("facedag serve: stopped", flush=True)
    except KeyboardInterrupt:
        print("facedag serve: stopped", flush=True)
    except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
        print(f"facedag serve: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return 0
