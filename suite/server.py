"""A team store on this machine: PostgreSQL for MLflow's backend and Optuna, and an MLflow tracking server.

    suite server start [--dir .server] [--port 5001] [--pg-port 5433]    # make server
    suite server stop  [--dir .server]                                    # make server-stop

Everything lives under one folder (default `.server/`, nothing system-wide): a PostgreSQL
cluster (`pg/`, initialised by `initdb` as the `postgres` user when we are root, listening on
127.0.0.1 only, password auth), its log, the MLflow server's log and its artifact root
(`artifacts/`, served through the tracking server), and `server.json` with the ports and pids.
`start` prints the two URIs to export; a second `start` while it runs prints them again.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .errors import OptionError, SuiteError

DEFAULT_DIR = ".server"
USER = "suite"
DATABASES = ("mlflow", "optuna")


def pg_bin() -> Path:
    """The PostgreSQL server binaries (Debian: /usr/lib/postgresql/<version>/bin)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not versions:
        raise SuiteError("PostgreSQL is not installed: apt-get install postgresql (or `make system-deps`)")
    return Path(versions[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse root: run them as the `postgres` user."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        raise SuiteError("running as root needs `runuser` to start PostgreSQL as the postgres user")
    return ["runuser", "-u", "postgres", "--", *cmd]


def _run(cmd: list[str], what: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise SuiteError(f"{what} failed: {lines[-1] if lines else f'exit code {done.returncode}'}")
    return done.stdout


def _state(folder: Path) -> dict:
    """What `start` wrote into folder/server.json ({} where there is none); a damaged file is one line."""
    path = folder / "server.json"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise SuiteError(f"{path} cannot be read ({getattr(err, 'strerror', None) or err}); stop the team store's processes "
                         f"by hand and remove the file") from None
    kinds = {"mlflow_pid": int, "port": int, "pg_port": int, "password": str}  # what start writes, once all runs
    if not isinstance(state, dict) or any(type(state.get(key)) is not kind for key, kind in kinds.items()):
        raise SuiteError(f"{path} is not what `suite server start` writes; stop the team store's processes by hand and "
                         f"remove the file")
    return state


def _ours(pid: int | None, folder: Path) -> bool:
    """Whether `pid` is the MLflow server `start` launched for `folder`: after a reboot the pid in server.json may
    belong to another program, which `stop` must not kill."""
    if not pid or pid <= 1:
        return False
    try:
        if Path("/proc/self").exists():
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        else:  # (macOS)
            command = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True).stdout
    except OSError:  # no such process (or no ps)
        return False
    return "mlflow" in command and str(folder / "artifacts") in command


def uris(state: dict, password: bool = True) -> dict:
    secret = state["password"] if password else "***"
    pg = f"postgresql+psycopg://{USER}:{secret}@127.0.0.1:{state['pg_port']}"
    return {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{state['port']}", "OPTUNA_STORAGE": f"{pg}/optuna",
            "backend": f"{pg}/mlflow"}


def write_env(folder: Path, state: dict) -> Path:
    """folder/env: the export lines for a shell (`source .server/env`), mode 600: it holds the password."""
    path = folder.resolve() / "env"
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    path.write_text("".join(f"export {k}={v}\n" for k, v in uris(state).items() if k != "backend"))
    return path


def _taken(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port already (a socket in TIME_WAIT does not count, as for uvicorn)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start(folder: Path = Path(DEFAULT_DIR), port: int | None = None, pg_port: int | None = None, timeout: float = 180) -> dict:
    """Start PostgreSQL and the MLflow server under `folder` (idempotent); returns the state with the URIs."""
    folder = folder.resolve()
    state = _state(folder)
    if state and _ours(state.get("mlflow_pid"), folder):  # started already: it answers, maybe after a moment (a busy machine)
        for _ in range(60):
            if _healthy(state["port"]):
                return state
            if not _ours(state["mlflow_pid"], folder):
                break
            time.sleep(0.5)
        else:  # (not "port in use by another program": it is ours)
            raise SuiteError(f"this store's MLflow server (pid {state['mlflow_pid']}) runs but does not answer on port {state['port']} "
                             f"(see {folder / 'mlflow.log'}); stop the store and start it again")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise SuiteError("the team server needs psycopg: pip install -e '.[server]'") from None
    bindir = pg_bin()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SuiteError(f"cannot make the server's folder {folder}: {err.strerror or err}; pass another --dir") from None
    data = folder / "pg"
    state = {"password": state.get("password") or secrets.token_urlsafe(18), "pg_port": pg_port or state.get("pg_port") or free_port(),
             "port": port or state.get("port") or free_port()}
    pg_up = (data / "PG_VERSION").exists() and _pg_running(bindir, data)
    # (another team store's server on this port answered the health check, and the new server's exit went unseen)
    for taken, option, given in ((state["port"], "--port", port), (None if pg_up else state["pg_port"], "--pg-port", pg_port)):
        if taken is not None and _taken(taken):
            raise OptionError(f"port {taken}{'' if given else ', which this store used before,'} is in use (another program "
                              f"or team store listens there); pass another {option}")
    if not (data / "PG_VERSION").exists():
        _initdb(bindir, folder, data, state["password"])
    if not pg_up:
        log = folder / "postgres.log"
        log.touch()
        _chown(log)
        _run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start", "-o",
                           f"-p {state['pg_port']} -c listen_addresses=127.0.0.1 -k {folder / 'socket'}"]),
             f"starting PostgreSQL (log: {log})")
    _create_databases(state)
    (folder / "artifacts").mkdir(exist_ok=True)
    state["mlflow_pid"] = _start_mlflow(folder, state, timeout)
    (folder / "server.json").write_text(json.dumps(state))
    os.chmod(folder / "server.json", 0o600)
    return state


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _initdb(bindir: Path, folder: Path, data: Path, password: str) -> None:
    data.mkdir(mode=0o700, exist_ok=True)
    _chown(data)
    (folder / "socket").mkdir(exist_ok=True)
    _chown(folder / "socket")
    pwfile = folder / "initdb.pw"
    pwfile.write_text(password)
    _chown(pwfile)
    try:
        _run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                           "--auth-local=peer", "-E", "UTF8", "--no-instructions"]),
             f"initdb in {data} (the postgres user must be able to reach it)")
    finally:
        pwfile.unlink(missing_ok=True)


def _pg_running(bindir: Path, data: Path) -> bool:
    return subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "status"]), capture_output=True).returncode == 0


def _create_databases(state: dict) -> None:
    import psycopg

    url = f"host=127.0.0.1 port={state['pg_port']} user={USER} password={state['password']} dbname=postgres"
    with psycopg.connect(url, autocommit=True) as conn:
        have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in DATABASES:
            if name not in have:
                conn.execute(f'CREATE DATABASE "{name}"')


def _start_mlflow(folder: Path, state: dict, timeout: float) -> int:
    """`mlflow server` over the PostgreSQL backend, artifacts proxied into folder/artifacts; detached."""
    # the backend URI, password and all, goes by the environment: a command line is shown to every user (ps)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": uris(state)["backend"]}
    log = open(folder / "mlflow.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--artifacts-destination",
         str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(state["port"]), "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SuiteError(f"the MLflow server exited (code {process.returncode}); see {folder / 'mlflow.log'}")
        if _healthy(state["port"]):
            return process.pid
        time.sleep(0.5)
    _kill_group(process.pid)
    raise SuiteError(f"the MLflow server did not answer on port {state['port']} within {timeout:.0f} s; see {folder / 'mlflow.log'}")


def _kill_group(pid: int) -> None:
    """SIGTERM the process group of `pid` (the MLflow server and its uvicorn workers), then SIGKILL."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(30):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_mlflow(folder: Path = Path(DEFAULT_DIR)) -> bool:
    """Stop the MLflow server `start` launched for `folder`; False where none runs."""
    folder = folder.resolve()
    state = _state(folder)
    if not _ours(state.get("mlflow_pid"), folder):
        return False
    _kill_group(state["mlflow_pid"])
    return True


def stop(folder: Path = Path(DEFAULT_DIR)) -> bool:
    """Stop what `start` started under `folder`; False when nothing ran."""
    folder = folder.resolve()
    if not _state(folder):
        return False
    stopped = stop_mlflow(folder)
    data = folder / "pg"
    if (data / "PG_VERSION").exists():
        bindir = pg_bin()
        if _pg_running(bindir, data):
            _run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), "stopping PostgreSQL")
            stopped = True
    return stopped
