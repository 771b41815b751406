"""Working as a team: two clones share a local-folder DVC remote, and experiments run on the project.

Clone A builds the data stages (tiny params) and pushes data and run-cache to a folder remote;
clone B, a `git clone` of A (the same commit and dvc.lock), pulls, after which `dvc status` is
clean for everything A built and `dvc repro` runs nothing. The demo clips travel the way a
studio's own local sources would: `dvc add data/demo` in A, `dvc pull` in B. In A, `dvc exp run
-S ...` runs an experiment that `dvc exp show --json` lists with its params and metrics, and
leaves no output for git to track. Real git, real DVC, no network.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from facedag.records import sha256_file
from flows.remote import SecretInConfigError, add_remote, pull, push, set_remote_option
from tests.conftest import TINY, VENV_BIN, make_project, tool_env

DATA_STAGES = [f"{step}@{i}" for step in ("download", "trim", "extract", "align", "dedupe") for i in ("src", "dst")]
GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@t"]
TIMEOUT_S = 600  # generous: a loaded 2-core machine; the data stages take ~30 s on an idle one


def _run(cwd: Path, *args: str) -> str:
    """Run a command in `cwd` (bounded), fail the test with its output if it fails, return the output."""
    proc = subprocess.run(list(args), cwd=cwd, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=TIMEOUT_S, check=False)  # fmt: skip
    assert proc.returncode == 0, f"{' '.join(args)} exited with {proc.returncode}:\n{proc.stdout[-4000:]}"
    return proc.stdout


def _dvc(cwd: Path, *args: str) -> str:
    return _run(cwd, str(VENV_BIN / "dvc"), *args)


def _git(cwd: Path, *args: str) -> str:
    return _run(cwd, "git", *GIT_ID, *args)


def _share_local_sources(root: Path) -> None:
    """Let a `data/<name>.dvc` file be committed while everything else under data/ stays git-ignored
    (what the project's .gitignore should say; a no-op once it does). `/data/?*`, not `/data/*`:
    DVC's gitignore matcher takes `/data/*` to ignore data/ itself and then never finds the .dvc file."""
    gitignore = root / ".gitignore"
    lines = gitignore.read_text().splitlines()
    if "/data/" in lines:
        lines[lines.index("/data/")] = "/data/?*\n!/data/*.dvc"
        gitignore.write_text("\n".join(lines) + "\n")


@dataclass
class Team:
    a: Path
    b: Path
    remote: Path
    a_files: dict[Path, str] = field(repr=False)  # what A built under data/ (path: sha256), before any experiment
    repro_b: str = field(repr=False)  # what `dvc repro dedupe` printed in clone B after the pull


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, demo_sources: Path) -> Team:
    """Clone A builds and pushes the data stages; clone B clones, pulls and reproduces."""
    base = tmp_path_factory.mktemp("team")
    remote = base / "remote"
    remote.mkdir()
    a = make_project(base / "a", demo_sources, TINY)
    _share_local_sources(a)
    _dvc(a, "add", "data/demo")
    _git(a, "add", "-A")
    _git(a, "commit", "-q", "-m", "project and demo sources")
    add_remote(a, "store", str(remote))  # what `facedag remote add store DIR` runs
    _git(a, "commit", "-q", "-m", "shared remote", ".dvc/config")
    _dvc(a, "repro", "dedupe")
    _git(a, "add", "dvc.lock", "params.yaml")
    _git(a, "commit", "-q", "-m", "data stages")
    push(a)
    a_files = {p.relative_to(a): sha256_file(p) for p in (a / "data").rglob("*") if p.is_file()}

    b = base / "b"
    _run(base, "git", "clone", "-q", str(a), str(b))
    pull(b, allow_missing=True)  # train, convert, render and report were never built in A: nothing to pull for them
    return Team(a=a, b=b, remote=remote, a_files=a_files, repro_b=_dvc(b, "repro", "dedupe"))


@pytest.mark.slow
def test_clone_b_pulls_what_a_built_and_reruns_nothing(team: Team) -> None:
    a, b = team.a, team.b
    assert _git(a, "rev-parse", "HEAD") == _git(b, "rev-parse", "HEAD")
    assert (b / "dvc.lock").read_bytes() == (a / "dvc.lock").read_bytes()
    assert (team.remote / "files" / "md5").is_dir(), "no data in the remote"
    assert (team.remote / "runs").is_dir(), (
        "no run-cache in the remote: DVC never saves a stage with a `cache: false` out (other than a metric or plot) "
        "to the run-cache"
    )

    # Everything A built is in B, byte for byte: cached outputs, metrics, rejected lists, the demo sources.
    assert any(p.parts[1] == "dedupe" and p.name == "metrics.json" for p in team.a_files)
    assert any(p.parts[1] == "demo" for p in team.a_files)
    for rel, digest in team.a_files.items():
        assert (b / rel).is_file(), f"{rel} did not reach clone B"
        assert sha256_file(b / rel) == digest, f"{rel} differs in clone B"

    status = json.loads(_dvc(b, "status", "--json"))
    # A built the data half
    not_built = {"train", "evaluate_model", "convert", "evaluate_video", "render", "export", "report"}
    assert not set(status) - not_built, f"stages not clean in clone B: {status}"
    assert json.loads(_dvc(b, "status", "--json", "dedupe", "--with-deps")) == {}
    assert "Running stage" not in team.repro_b, team.repro_b
    assert "up to date" in team.repro_b
    assert _git(b, "status", "--porcelain") == "", "pulled outputs must be git-ignored"


@pytest.mark.slow
def test_experiment_runs_and_is_listed(team: Team) -> None:
    a = team.a
    out = _dvc(a, "exp", "run", "-n", "fewer-faces", "-S", "dedupe.max_faces=5", "dedupe@src")
    assert "Running stage 'dedupe@src'" in out and "Running stage 'dedupe@dst'" not in out, out
    # The experiment changes params.yaml and dvc.lock, and no output lands in git's view.
    changed = {line[3:] for line in _git(a, "status", "--porcelain").splitlines()}
    assert changed <= {"params.yaml", "dvc.lock"}, changed

    rows = json.loads(_dvc(a, "exp", "show", "--json"))
    exps = {rev["name"]: rev["data"] for row in rows for group in row.get("experiments") or [] for rev in group["revs"]}
    assert "fewer-faces" in exps, list(exps)
    data = exps["fewer-faces"]
    assert data["params"]["params.yaml"]["data"]["dedupe"]["max_faces"] == 5
    metrics = data["metrics"]["data/dedupe/src/metrics.json"]
    assert "error" not in metrics, f"the experiment's metrics cannot be read back: {metrics}"
    assert 0 < metrics["data"]["kept"] <= 5


def test_remote_add_keeps_secrets_out_of_the_committed_config(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    _run(root, "git", "init", "-q")
    _dvc(root, "init", "-q")
    add_remote(root, "store", str(tmp_path / "remote"))
    add_remote(root, "nas", "ssh://nas.example/srv/dvc", default=False)
    config = (root / ".dvc" / "config").read_text()
    assert "remote = store" in config and "ssh://nas.example/srv/dvc" in config

    for url in ("ssh://studio:hunter2@nas.example/srv/dvc", "https://dav.example/dvc?token=hunter2",
                "s3://bucket/dvc?X-Amz-Signature=hunter2", "s3://AKIAABCDEFGHIJKLMNOP@bucket/dvc"):  # fmt: skip
        with pytest.raises(SecretInConfigError):
            add_remote(root, "leak", url)
    assert (root / ".dvc" / "config").read_text() == config

    set_remote_option(root, "nas", "user", "studio")
    set_remote_option(root, "nas", "password", "hunter2")
    assert "user = studio" in (root / ".dvc" / "config").read_text()
    assert "hunter2" not in (root / ".dvc" / "config").read_text()
    assert "hunter2" in (root / ".dvc" / "config.local").read_text()
    assert ".dvc/config.local" not in _git(root, "status", "--porcelain", "--untracked-files=all")

    # the CI check reads the committed config: clean now, and it catches a key written there by hand
    check = [str(VENV_BIN / "facedag"), "check-secrets", ".dvc/config"]
    assert subprocess.run(check, cwd=root, capture_output=True, env=tool_env(), timeout=120).returncode == 0
    _dvc(root, "remote", "modify", "nas", "password", "hunter2")  # without --local: the mistake
    bad = subprocess.run(check, cwd=root, capture_output=True, text=True, env=tool_env(), timeout=120)
    assert bad.returncode == 1 and "['remote \"nas\"'] password looks like a credential" in bad.stderr


@pytest.mark.parametrize(
    ("text", "finding"),
    [
        ('[core]\n    remote = s\n[\'remote "s"\']\n    url = s3://b/p\n    endpointurl = https://minio.local\n', None),
        ('[\'remote "s"\']\n    url = s3://b/p\n    secret_access_key = abc\n', "secret_access_key looks like"),
        ('[\'remote "s"\']\n    url = s3://b/p\n    my_api_key = abc\n', "my_api_key looks like"),
        ('[\'remote "s"\']\n    url = https://h/p?sig=abc\n', "looks like a token or a signature"),
        ('[\'remote "s"\']\n    url = ssh://u:pw@h/p\n', "has a password in it"),
        ('[\'remote "s"\']\n    region = AKIAABCDEFGHIJKLMNOP\n', "AWS access key id"),
    ],
)
def test_secrets_in_config(tmp_path: Path, text: str, finding: str | None) -> None:
    from flows.remote import secrets_in_config

    config = tmp_path / "config"
    config.write_text(text)
    found = secrets_in_config(config)
    if finding is None:
        assert found == []
    else:
        assert len(found) == 1 and finding in found[0], found


def test_the_repository_config_holds_no_secret() -> None:
    from flows.remote import secrets_in_config
    from tests.conftest import REPO

    assert secrets_in_config(REPO / ".dvc" / "config") == []
