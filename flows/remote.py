"""The shared DVC remote: what `facedag remote add NAME URL` and the workers' push/pull run.

A team shares one DVC remote (a folder, a NAS mount, S3/MinIO, SSH...). dvc.lock and params.yaml
travel through git; the data, the models and the run-cache travel through the remote. These
helpers are thin wrappers over the `dvc` command (argument lists, never a shell), for two reasons:
the same commands are what the README tells people to type, and `dvc` itself owns the config
format and the transfer logic.

Credentials never go into `.dvc/config`: that file is committed, so a key written there ends up in
every clone and in the git history. `add_remote` refuses URLs that carry a password, a token or a
signature; `set_remote_option` writes secret options (passwords, keys, tokens) only into
`.dvc/config.local`, which DVC keeps out of git. The alternative is the environment
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3 and MinIO, ...), which DVC reads itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

# The remote options that hold secrets (DVC's names across its S3, Azure, GCS, SSH, HTTP,
# WebDAV, OSS, HDFS and GDrive remotes). They belong in .dvc/config.local or the environment.
SECRET_OPTIONS = frozenset({
    "access_key_id", "secret_access_key", "session_token",
    "password", "token", "key", "passphrase",
    "account_key", "sas_token", "connection_string", "client_secret",
    "gdrive_client_secret", "gdrive_service_account_json_file_path",
    "oss_key_id", "oss_key_secret",
})  # fmt: skip

# Query parameters of signed or tokenised URLs (S3 presigned, Azure SAS, bearer tokens in URLs).
_SECRET_QUERY = re.compile(r"sig|signature|token|secret|password|passwd|credential|key", re.IGNORECASE)
# An AWS access key id, wherever it appears in a URL.
_AWS_KEY_ID = re.compile(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

DVC_TIMEOUT_S = 6 * 3600  # a push or pull of a large dataset over a slow link; never unbounded


class SecretInConfigError(ValueError):
    """A credential would have been written into the committed .dvc/config."""


class DvcCommandError(RuntimeError):
    """A `dvc` command failed; `output` holds what it printed (its own error lines say why)."""

    def __init__(self, args: Sequence[str], returncode: int, output: str) -> None:
        tail = "\n".join(output.strip().splitlines()[-20:])
        super().__init__(f"`dvc {' '.join(args)}` exited with {returncode}:\n{tail}")
        self.returncode = returncode
        self.output = output


def dvc_executable() -> str:
    """The `dvc` beside this interpreter (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    if beside.exists():
        return str(beside)
    found = shutil.which("dvc")
    if not found:
        raise FileNotFoundError("dvc is not installed in this environment (pip install -e . installs it)")
    return found


def _env() -> dict[str, str]:
    """The environment for dvc: this venv first on PATH (dvc.yaml's commands say `python`), no telemetry."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key, value in (("DO_NOT_TRACK", "1"), ("DVC_NO_ANALYTICS", "1")):
        env.setdefault(key, value)
    return env


def run_dvc(root: str | os.PathLike[str], args: Sequence[str], timeout: float = DVC_TIMEOUT_S) -> str:
    """Run `dvc ARGS` in the project `root` and return its output; raise DvcCommandError on failure."""
    proc = subprocess.run(
        [dvc_executable(), *args], cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if proc.returncode:
        raise DvcCommandError(args, proc.returncode, proc.stdout)
    return proc.stdout


def secret_in_url(url: str) -> str | None:
    """Why `url` looks like it carries a credential, or None. Checked before it reaches .dvc/config."""
    if _AWS_KEY_ID.search(url):
        return "it contains an AWS access key id"
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        if parts.password is not None:
            return "it has a password in it (user:password@host)"
        for key, _ in parse_qsl(parts.query, keep_blank_values=True):
            if _SECRET_QUERY.search(key):
                return f"its query has `{key}`, which looks like a token or a signature"
    return None


# Option names that look like credentials even when DVC does not know them (yet).
_SECRET_NAME = re.compile(r"secret|password|passwd|passphrase|token|credential|private|(^|_)key(_|$)|sas|sig",
                          re.IGNORECASE)  # fmt: skip


def secrets_in_config(path: str | os.PathLike[str]) -> list[str]:
    """Where the DVC config at `path` holds something secret-looking: one line per finding.

    Meant for the committed `.dvc/config` (CI runs it through `facedag check-secrets`): a key
    there is in every clone and in the git history for good. `.dvc/config.local` and the
    environment are where credentials belong. The file is read as text, so a config DVC itself
    would reject is still checked.
    """
    import configparser

    config = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        config.read_string(Path(path).read_text(encoding="utf-8"), source=os.fspath(path))
    except FileNotFoundError:
        return []
    except configparser.Error as exc:
        return [f"{path}: cannot be parsed ({exc.__class__.__name__}); check it by hand"]
    found = []
    for section in config.sections():
        for option, value in config.items(section):
            where = f"{path}: [{section}] {option}"
            if option.lower() in SECRET_OPTIONS or _SECRET_NAME.search(option):
                found.append(f"{where} looks like a credential: move it to .dvc/config.local "
                             f"(`dvc remote modify --local ...`) or the environment")  # fmt: skip
            elif reason := secret_in_url(value) or (_AWS_KEY_ID.search(value) and "it holds an AWS access key id"):
                found.append(f"{where}: {reason}")
    return found


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"remote name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter or digit")


def add_remote(root: str | os.PathLike[str], name: str, url: str, default: bool = True, force: bool = False) -> str:
    """`dvc remote add [--default] [--force] NAME URL` in `root`, refusing URLs with credentials in them.

    The remote goes into .dvc/config, which is committed so that every clone finds it. A local
    path is taken relative to `root` (DVC stores it relative to .dvc/); a NAS mount is best given
    as an absolute path that is the same on every machine. Credentials are set afterwards with
    `set_remote_option` (or `dvc remote modify --local`), or come from the environment.
    """
    _check_name(name)
    if not url or url.startswith("-"):
        raise ValueError(f"remote URL {url!r}: give a folder, a mount point or a URL such as s3://bucket/path")
    reason = secret_in_url(url)
    if reason:
        raise SecretInConfigError(
            f"refusing to write the URL of remote {name!r} into .dvc/config (committed to git): {reason}. "
            f"Add the URL without it, then keep the secret out of git: "
            f"`dvc remote modify --local {name} password ...` (or access_key_id / secret_access_key / token), "
            f"which writes .dvc/config.local, or set it in the environment (e.g. AWS_ACCESS_KEY_ID)."
        )
    args = ["remote", "add"]
    if default:
        args.append("--default")
    if force:
        args.append("--force")
    return run_dvc(root, [*args, name, url], timeout=120)


def set_remote_option(root: str | os.PathLike[str], name: str, option: str, value: str) -> str:
    """`dvc remote modify NAME OPTION VALUE`, with secret options always written with `--local`.

    Non-secret options (endpointurl, region, port, user...) go into .dvc/config for the whole
    team; secret ones (SECRET_OPTIONS) into .dvc/config.local, which stays on this machine.
    """
    _check_name(name)
    local = option.lower() in SECRET_OPTIONS
    if not local and option.lower() == "url":
        reason = secret_in_url(value)
        if reason:
            raise SecretInConfigError(f"refusing to write the URL of remote {name!r} into .dvc/config: {reason}")
    args = ["remote", "modify", *(["--local"] if local else []), name, option, value]
    return run_dvc(root, args, timeout=120)


def push(root: str | os.PathLike[str], remote: str | None = None, targets: Sequence[str] = ()) -> str:
    """`dvc push --run-cache`: the outputs in dvc.lock and the run-cache, so that a colleague's
    `dvc pull` gets the data and `dvc repro` can restore stages it has never run."""
    args = ["push", "--run-cache", *(["-r", remote] if remote else []), *targets]
    return run_dvc(root, args)


def pull(
    root: str | os.PathLike[str], remote: str | None = None, targets: Sequence[str] = (), allow_missing: bool = False
) -> str:
    """`dvc pull`: the outputs that this commit's dvc.lock names, from the remote into the workspace.

    `allow_missing` tolerates outputs nobody has pushed yet (a stage not built at this commit),
    which plain `dvc pull` reports as an error.
    """
    args = ["pull", *(["-r", remote] if remote else []), *(["--allow-missing"] if allow_missing else []), *targets]
    return run_dvc(root, args)


def repro_pull(root: str | os.PathLike[str], targets: Sequence[str] = ()) -> str:
    """`dvc repro --pull`: reproduce `targets`, pulling instead of running what the remote already has
    (what a worker does before its stage, so that it rebuilds nothing another machine pushed)."""
    return run_dvc(root, ["repro", "--pull", *targets])
