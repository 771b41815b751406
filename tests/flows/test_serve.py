"""`facedag serve` for real: a Prefect server on 127.0.0.1, the two deployments, a real `gpu` worker
that runs training sessions in a temp DVC project, resumes between sessions and checkpoints when a
run is cancelled; and the auth string (401 without it, 200 with it)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TINY, VENV_BIN, deep_update, make_project, tool_env

pytestmark = pytest.mark.slow

SESSION = "facedag-train-session/train-session"
PIPELINE = "facedag-pipeline/pipeline"
RUN_TIMEOUT = 240  # seconds for one tiny session on a loaded 2-core machine (it takes ~15 s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def set_train(root: Path, **values: Any) -> None:
    path = root / "params.yaml"
    data = yaml.safe_load(path.read_text())
    deep_update(data, {"train": values})
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def model_record(root: Path) -> dict[str, Any]:
    from flows.train_session import read_model_record

    return read_model_record(root)


def checkpoint_steps(root: Path) -> list[int]:
    from facedag.training.checkpoint import list_checkpoints

    return sorted(step for step, _ in list_checkpoints(root / "models" / "checkpoints"))


def flow_run_log(client: Any, run_id: Any) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(entry.message for entry in logs)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, demo_sources: Path) -> Path:
    """A tiny project with its data stages built (train reads data/dedupe)."""
    params = deep_update(json.loads(json.dumps(TINY)), {"train": {"deterministic": False, "eval_every": 6}})
    root = make_project(tmp_path_factory.mktemp("serve") / "proj", demo_sources, params)
    done = subprocess.run([str(VENV_BIN / "dvc"), "repro", "dedupe"], cwd=root, env=tool_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return root


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A fresh Prefect home (database, profiles) for this file's servers, workers that poll often."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect_home")))
    mp.setenv("PREFECT_WORKER_QUERY_SECONDS", "2")
    for key in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"):
        mp.delenv(key, raising=False)
    yield
    mp.undo()


def test_serve_trains_in_sessions_that_resume_and_checkpoint_when_cancelled(
        project: Path, prefect_env: None, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import serving

    port = free_port()
    with serving(port=port, session_minutes=5, schedule_minutes=240, root=project, log_dir=tmp_path / "logs") as served:
        assert served.started_server and set(served.processes) == {"server", "worker-cpu", "worker-gpu"}
        with temporary_settings(updates={PREFECT_API_URL: served.url}), get_client(sync_client=True) as client:
            # both deployments, read back through the API
            session = client.read_deployment_by_name(SESSION)
            pipeline = client.read_deployment_by_name(PIPELINE)
            assert (session.work_pool_name, pipeline.work_pool_name) == ("gpu", "cpu")
            assert session.parameters == {"root": str(project), "minutes": 5}
            assert session.global_concurrency_limit is not None and session.global_concurrency_limit.limit == 1
            assert [s.schedule.interval.total_seconds() for s in session.schedules] == [240 * 60]
            assert pipeline.parameters == {"root": str(project)} and not pipeline.schedules
            assert {p.name for p in client.read_work_pools()} >= {"cpu", "gpu"}

            # session 1: a real gpu worker trains from scratch to train.max_steps (12) and checkpoints
            first = run_deployment(SESSION, timeout=RUN_TIMEOUT, poll_interval=2)
            assert first.state is not None and first.state.type == StateType.COMPLETED, \
                flow_run_log(client, first.id)
            assert model_record(project)["step"] == 12 and model_record(project)["resumed_from"] is None
            assert 12 in checkpoint_steps(project)

            # session 2 resumes from session 1's step (DVC thinks train is up to date: --force)
            set_train(project, max_steps=18)
            second = run_deployment(SESSION, timeout=RUN_TIMEOUT, poll_interval=2)
            assert second.state is not None and second.state.type == StateType.COMPLETED, \
                flow_run_log(client, second.id)
            log = flow_run_log(client, second.id)
            assert "resumed from step 12" in log, log
            assert model_record(project)["step"] == 18 and model_record(project)["resumed_from"] == 12

            # session 3, cancelled mid-training: it checkpoints (at a step between checkpoint_every's) first
            set_train(project, max_steps=100000, checkpoint_every=100000, eval_every=1)
            third = run_deployment(SESSION, timeout=0)
            wait_for(lambda: "step 20/" in flow_run_log(client, third.id), RUN_TIMEOUT, "session 3 to train")
            from prefect.states import Cancelling

            client.set_flow_run_state(third.id, Cancelling(), force=True)
            state = wait_for(lambda: (s := client.read_flow_run(third.id).state) and s.is_final() and s,
                             RUN_TIMEOUT, "session 3 to end")
            assert state.type == StateType.CANCELLED, flow_run_log(client, third.id)
            model_json = project / "models" / "model.json"  # dvc repro --force removed session 2's
            record = wait_for(lambda: model_json.exists() and model_record(project), 60, "model.json after the cancel")
            assert record["stopped"] == "signal" and record["step"] > 18, record
            assert record["step"] in checkpoint_steps(project)


def test_auth_string_and_connecting_to_a_running_server(project: Path, prefect_env: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With PREFECT_SERVER_API_AUTH_STRING set the server answers 401 without it and 200 with it; serve's own
    client sends it (it registers the deployments), and a second serve connects to the running server."""
    import httpx

    from flows.serve import SESSION_DEPLOYMENT, auth_headers, serving

    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "admin:s3cret")
    port = free_port()
    with serving(port=port, workers=False, root=project, log_dir=tmp_path / "logs") as served:
        assert served.started_server and set(served.processes) == {"server"}
        pool = f"{served.url}/work_pools/gpu"
        assert httpx.get(pool, timeout=30).status_code == 401
        assert httpx.get(pool, headers=auth_headers("admin:wrong"), timeout=30).status_code == 401
        answer = httpx.get(pool, headers=auth_headers("admin:s3cret"), timeout=30)
        assert answer.status_code == 200 and answer.json()["type"] == "process"
        # a second serve finds the server and updates the schedule (a cron this time)
        with serving(port=port, workers=False, root=project, cron="0 3 * * *") as again:
            assert not again.started_server and not again.processes
            assert again.deployments[SESSION_DEPLOYMENT] == served.deployments[SESSION_DEPLOYMENT]
        deployment = httpx.get(f"{served.url}/deployments/{served.deployments[SESSION_DEPLOYMENT]}",
                               headers=auth_headers("admin:s3cret"), timeout=30).json()
        assert [s["schedule"].get("cron") for s in deployment["schedules"]] == ["0 3 * * *"]
        assert deployment["global_concurrency_limit"]["limit"] == 1


def test_prefect_cli_lists_and_ctrl_c_stops_everything(project: Path, prefect_env: None, tmp_path: Path) -> None:
    """`facedag serve` as a user starts it: Prefect's own list commands work against it (with the
    pinned FastAPI the server accepts the client's null paging fields), and SIGINT stops serve,
    its server and its workers within 15 s."""
    import os
    import signal

    import psutil

    # a session with nothing left to train (resume, stop at max_steps): quick, and it leaves a run and an artifact
    set_train(project, max_steps=max(model_record(project).get("step") or 12, 12), checkpoint_every=6, eval_every=6)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(tool_env(), PREFECT_API_URL=url, COLUMNS="250")  # rich tables: wide enough for whole names
    serve = subprocess.Popen([str(VENV_BIN / "facedag"), "serve", "--port", str(port), "--every", "240",
                              "--session-minutes", "5", "--log-dir", str(tmp_path / "logs")],
                             cwd=project, env={k: v for k, v in env.items() if k != "PREFECT_API_URL"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert serve.stdout is not None
        for line in serve.stdout:
            lines.append(line)
            if "the Prefect UI is at" in line:
                break
        assert serve.poll() is None, "".join(lines)

        run = subprocess.run([str(VENV_BIN / "prefect"), "deployment", "run", SESSION, "--watch",
                              "--watch-timeout", str(RUN_TIMEOUT)], cwd=project, env=env, capture_output=True,
                             text=True, timeout=RUN_TIMEOUT + 60)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]

        def cli(*args: str) -> str:
            done = subprocess.run([str(VENV_BIN / "prefect"), *args], cwd=project, env=env, capture_output=True,
                                  text=True, timeout=120, check=False)
            assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout[-1500:]}{done.stderr[-1500:]}"
            return done.stdout

        assert {"facedag-pipeline", "pipeline", "facedag-train-session", "train-session"} <= set(
            cli("deployment", "ls").replace("/", " ").split())
        assert "facedag-train-session" in cli("flow-run", "ls")
        pools = cli("work-pool", "ls")
        assert " cpu " in pools and " gpu " in pools
        assert "facedag-train-session" in cli("artifact", "ls")

        family = psutil.Process(serve.pid).children(recursive=True)
        assert any("worker" in " ".join(p.cmdline()) for p in family)
        started = time.monotonic()
        os.kill(serve.pid, signal.SIGINT)
        serve.wait(timeout=30)
        _, alive = psutil.wait_procs(family, timeout=max(0.1, 15 - (time.monotonic() - started)))
        stopped_in = time.monotonic() - started
        assert not alive and stopped_in < 15, f"{len(alive)} still running after {stopped_in:.1f} s"
        assert serve.returncode == 0
    finally:
        if serve.poll() is None:
            serve.kill()
        for proc in psutil.Process().children(recursive=True):
            try:
                if "prefect" in " ".join(proc.cmdline()):
                    proc.kill()
            except psutil.Error:  # gone, or a zombie already
                continue
