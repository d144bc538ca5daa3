"""The team store (`suite server`): a real PostgreSQL and a real MLflow tracking server, several drivers, kill -9.

The server runs in a throw-away folder under /tmp (the postgres user must reach it) for this
module and is stopped at its end. Without Debian's postgresql or psycopg these tests skip,
except under CI=true, where they fail.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import DATA_DIR, ROOT, needs_mnist

TORTURED = """
name: tortured
question: Does a study survive its drivers and workers killed with -9?
datasets: [mnist]
seeds: 4
metric: test_acc
baseline: none
base:
  data: {train_size: 1500, val_size: 300, test_size: 500}
  model: {name: mlp, hidden: [64]}
  optimizer: {name: adam, lr: 0.01}
  train: {batch_size: 50, epochs: 2}
variants:
  none: {}
  wd: {optimizer: {weight_decay: 0.01}}
search:
  objective: val_acc
  space:
    optimizer.lr: {type: float, low: 1.0e-3, high: 0.1, log: true}
  trials: 6
  sampler: random
  pruner: none
claims:
  - wd > none
smoke: {seeds: 4, epochs: 2, train_size: 1500, val_size: 300, test_size: 500, trials: 6}
"""
KEYS = 8  # 2 variants x 4 seeds


def _postgres_missing() -> str | None:
    from suite import server

    try:
        server.pg_bin()
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[server]')"
    except Exception as err:
        return str(err)
    return None


@pytest.fixture(scope="module")
def team_store():
    from suite import server

    missing = _postgres_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the team store cannot start: {missing}")
        pytest.skip(missing)
    folder = Path(tempfile.mkdtemp(prefix="suite-server-", dir="/tmp"))
    folder.chmod(0o755)  # the postgres user runs the database inside
    try:
        state = server.start(folder)
        yield folder, server.uris(state)
    finally:
        server.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


def test_server_prints_redacted_uris_and_keeps_the_password_in_a_private_file(team_store, tmp_path):
    folder, uris = team_store
    out = subprocess.run([sys.executable, "-m", "suite", "server", "start", "--dir", str(folder)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    password = json.loads((folder / "server.json").read_text())["password"]
    assert out.returncode == 0 and password not in out.stdout + out.stderr
    assert uris["MLFLOW_TRACKING_URI"] in out.stdout and "suite:***@" in out.stdout
    env = (folder / "env").read_text()
    assert f"export OPTUNA_STORAGE={uris['OPTUNA_STORAGE']}" in env and (folder / "env").stat().st_mode & 0o077 == 0
    assert f'(`make server-stop ARGS="--dir {folder}"` stops it)' in out.stdout  # (`make server-stop` stops .server)
    # the password is in no process's command line (ps shows those to every user): MLflow reads its backend from the env
    state = json.loads((folder / "server.json").read_text())
    assert password not in Path(f"/proc/{state['mlflow_pid']}/cmdline").read_bytes().decode()
    # a second store asked for the port the first listens on: one line, exit 2 (it said 'running', served by the first)
    other = tmp_path / "other"
    out = subprocess.run([sys.executable, "-m", "suite", "server", "start", "--dir", str(other), "--port", str(state["port"])],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and out.stderr == (f"error: port {state['port']} is in use (another program or team store listens "
                                                   "there); pass another --port\n"), out.stderr
    assert not (other / "pg").exists()  # (nothing was started)
    out = subprocess.run([sys.executable, "-m", "suite", "server", "start", "--dir", str(ROOT / "README.md")], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "is a file" in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_drivers_creating_one_experiment_at_once_both_get_it(team_store):
    """Drivers of a study the store had never seen, started together: one died with 'UniqueViolation ... experiment_tag_pk' (MLflow
    writes a tag with a select, then an insert: both inserted the experiment's note and view)."""
    import threading

    from mlflow.tracking import MlflowClient

    from suite import tracking

    _, uris = team_store
    uri = uris["MLFLOW_TRACKING_URI"]
    for attempt in range(15):  # (without the retry, 4 threads at once met the violation within a few attempts here)
        name, barrier, ids, errors = f"race-{attempt}-{random.randrange(10**9)}", threading.Barrier(4), [], []

        def driver():
            client = MlflowClient(uri)
            barrier.wait()
            try:
                ids.append(tracking.experiment_id(client, name, description="q?", metric="test_acc", columns=["optimizer.lr"]))
            except Exception as err:
                errors.append(err)

        threads = [threading.Thread(target=driver) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(ids) == 4 and len(set(ids)) == 1, errors
        assert MlflowClient(uri).get_experiment(ids[0]).tags["suite.metric"] == "test_acc"


def test_server_stop_kills_only_the_server_it_started(tmp_path):
    """A server.json whose pid now belongs to another program (after a reboot, a reused pid): `stop` leaves that
    program alone; a damaged server.json is one line."""
    other = subprocess.Popen(["sleep", "120"], start_new_session=True)
    stop = [sys.executable, "-m", "suite", "server", "stop", "--dir", str(tmp_path)]
    try:
        state = {"mlflow_pid": other.pid, "port": 5999, "pg_port": 5998, "password": "x"}
        (tmp_path / "server.json").write_text(json.dumps(state))
        out = subprocess.run(stop, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 0 and "no team store is running" in out.stdout, out.stderr
        time.sleep(0.5)
        assert other.poll() is None, "stop killed a program that is not the team store's MLflow server"
        for damaged in [json.dumps({**state, "mlflow_pid": "abc"}), "{", json.dumps([1])]:
            (tmp_path / "server.json").write_text(damaged)
            out = subprocess.run(stop, capture_output=True, text=True, cwd=ROOT, timeout=120)
            assert out.returncode == 1 and out.stderr.count("\n") == 1 and "server.json" in out.stderr and "Traceback" not in out.stderr
    finally:
        other.kill()
        other.wait()


def _env(uris: dict) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": uris["MLFLOW_TRACKING_URI"], "OPTUNA_STORAGE": uris["OPTUNA_STORAGE"],
            "SUITE_DATA_DIR": str(DATA_DIR), "SUITE_LEASE_SECONDS": "4", "PYTHONPATH": str(ROOT)}


def _children(pid: int) -> list[int]:
    """The worker processes of a driver: its children that run torch (not multiprocessing's resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and "spawn_main" in (stat.parent / "cmdline").read_text():
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def torture(commands: list[list[str]], env: dict, kills: int, seed: int) -> dict:
    """Run the drivers; `kills` times, kill -9 a random driver or one of its workers; restart whatever exits non-zero.

    Ends when every driver has exited 0 once the kills are over. Returns counts of what happened.
    """
    rng, timeout, started = random.Random(seed), 180 + 20 * kills, time.monotonic()
    procs = [subprocess.Popen(c, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in commands]
    done, killed, restarts, errors = [False] * len(procs), {"driver": 0, "worker": 0}, 0, []
    deadline, next_kill = time.monotonic() + timeout, time.monotonic() + rng.uniform(5, 8)  # drivers need seconds to start
    try:
        while not all(done):
            assert time.monotonic() < deadline, f"drivers still running after {timeout} s: {killed}, {restarts} restarts"
            if sum(killed.values()) < kills and time.monotonic() >= next_kill:
                live = [i for i, p in enumerate(procs) if p.poll() is None]
                if live:
                    i = rng.choice(live)
                    workers = _children(procs[i].pid)
                    if workers and rng.random() < 0.5:
                        os.kill(rng.choice(workers), signal.SIGKILL)
                        killed["worker"] += 1
                    else:
                        procs[i].kill()
                        killed["driver"] += 1
                next_kill = time.monotonic() + rng.uniform(2.5, 5)
            for i, p in enumerate(procs):
                if done[i] or p.poll() is None:
                    continue
                stderr = p.stderr.read()
                if p.returncode == 0 and sum(killed.values()) >= kills:
                    done[i] = True
                    continue
                if p.returncode not in (0, 1, -signal.SIGKILL) or "Traceback" in stderr:
                    errors.append(f"driver {i} exit {p.returncode}: {stderr[-600:]}")
                procs[i] = subprocess.Popen(commands[i], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                restarts += 1
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not errors, "\n".join(errors)
    return {"drivers": len(commands), "kills": kills, **killed, "restarts": restarts, "seconds": round(time.monotonic() - started, 1)}


def _report_lease(uris: dict, exp_id: str, run_ids: list) -> tuple[int, str]:
    """(token, state) of the claim on writing the report of exactly these finished runs."""
    import hashlib

    import psycopg

    digest = hashlib.sha256(" ".join(run_ids).encode()).hexdigest()[:16]
    url = uris["OPTUNA_STORAGE"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT token, state FROM suite_leases WHERE key LIKE %s", (f"report/%#{exp_id}/{digest}",)).fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def _write_figures(name: str, figures: dict) -> None:
    """What the torture did, for the README's reliability figures (test-output/server/)."""
    out = ROOT / "test-output" / "server"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(figures, indent=1))
    print(name, figures)


@needs_mnist
@pytest.mark.slow
def test_three_drivers_share_a_study_through_kill_9_and_lose_or_duplicate_nothing(team_store, tmp_path):
    from mlflow.tracking import MlflowClient

    _, uris = team_store
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "tortured.yaml").write_text(TORTURED)
    study = str(tmp_path / "studies" / "tortured.yaml")
    commands = [[sys.executable, "-m", "suite", "study", study, "--smoke", "--workers", "1", "--reports-dir", str(tmp_path / f"r{i}")]
                for i in range(3)]
    happened = torture(commands, _env(uris), kills=int(os.environ.get("SUITE_TORTURE_KILLS", "5")), seed=1)
    assert happened["driver"] + happened["worker"] >= 5

    client = MlflowClient(uris["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("tortured/smoke")
    runs = client.search_runs([exp.experiment_id], "tags.`suite.kind` = 'run'", max_results=1000)
    keys = [r.data.tags["suite.run_key"] for r in runs]
    assert len(keys) == KEYS and len(set(keys)) == KEYS, "one run per run key"
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(client.search_runs([exp.experiment_id], "tags.`suite.kind` = 'summary'")) == 1
    complete = [p for p in tmp_path.glob("r*/smoke/tortured/runs.csv") if len(pd.read_csv(p)) == KEYS]
    # the report of the finished runs is claimed like a run: written once, unless its writer is killed while writing
    # (then the claim expires and the next driver writes it again: one more token)
    token, state = _report_lease(uris, exp.experiment_id, sorted(r.info.run_id for r in runs))
    assert state == "done" and 1 <= len(complete) <= token, (len(complete), token, state)

    # an undisturbed serial run of the same study, on its own sqlite store: the same numbers
    serial = subprocess.run([sys.executable, "-m", "suite", "study", study, "--smoke", "--executor", "serial", "--tracking-uri",
                             f"sqlite:///{tmp_path}/serial.db", "--reports-dir", str(tmp_path / "serial")],
                            env=_env(uris), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert serial.returncode == 0, serial.stderr[-600:]
    ours, reference = (pd.read_csv(p).sort_values("run_key").reset_index(drop=True)
                       for p in (complete[0], tmp_path / "serial" / "smoke" / "tortured" / "runs.csv"))
    metrics = [c for c in reference.columns if c.startswith(("test_", "val_", "train_")) and c != "train_seconds"]
    assert metrics and list(ours["run_key"]) == list(reference["run_key"])
    pd.testing.assert_frame_equal(ours[metrics], reference[metrics])
    _write_figures("torture-study", {**happened, "runs": KEYS, "lost": 0, "duplicated": 0, "report_writers": token})


@needs_mnist
@pytest.mark.slow
def test_three_drivers_share_a_search_through_kill_9_and_count_each_trial_once(team_store, tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    _, uris = team_store
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "tortured.yaml").write_text(TORTURED.replace("name: tortured", "name: tortured_search"))
    study = str(tmp_path / "studies" / "tortured.yaml")
    commands = [[sys.executable, "-m", "suite", "tune", study, "--smoke", "--workers", "1", "--reports-dir", str(tmp_path / f"r{i}")]
                for i in range(3)]
    happened = torture(commands, _env(uris), kills=int(os.environ.get("SUITE_TORTURE_KILLS", "5")), seed=2)
    assert happened["driver"] + happened["worker"] >= 5

    trials = optuna.load_study(study_name="tortured_search/smoke", storage=uris["OPTUNA_STORAGE"]).get_trials(deepcopy=False)
    from suite.tune import counted, interrupted

    assert counted(trials) == 6, "the trial budget, no more and no less"
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    kept = [t for t in trials if not interrupted(t)]
    client = MlflowClient(uris["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("tortured_search/smoke")
    runs = client.search_runs([exp.experiment_id], "tags.`suite.kind` = 'trial'", max_results=1000)
    assert "RUNNING" not in {r.info.status for r in runs}
    recorded = sorted(int(r.data.tags["suite.trial"]) for r in runs if r.info.status in ("FINISHED", "FAILED"))
    assert recorded == sorted(t.number for t in kept), "one recorded MLflow run per counted trial, none twice"
    parents = client.search_runs([exp.experiment_id], "tags.`suite.kind` = 'search'")
    assert len(parents) == 1 and parents[0].data.metrics["trials"] == 6
    password = json.loads((team_store[0] / "server.json").read_text())["password"]
    assert "***" in parents[0].data.tags["suite.optuna_storage"] and password not in json.dumps(parents[0].data.tags)
    _write_figures("torture-search", {**happened, "trials": 6, "interrupted": len(trials) - len(kept)})


@needs_mnist
@pytest.mark.slow
def test_a_tracking_server_gone_mid_study_is_one_line_and_the_next_call_resumes(team_store, tmp_path):
    from mlflow.tracking import MlflowClient

    from suite import server

    folder, uris = team_store
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "outage.yaml").write_text(TORTURED.replace("name: tortured", "name: outage"))
    command = [sys.executable, "-m", "suite", "study", str(tmp_path / "studies" / "outage.yaml"), "--smoke", "--workers", "1",
               "--reports-dir", str(tmp_path / "r")]
    env = {**_env(uris), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    client = MlflowClient(uris["MLFLOW_TRACKING_URI"])

    def finished() -> list:
        exp = client.get_experiment_by_name("outage/smoke")
        return client.search_runs([exp.experiment_id], "tags.`suite.kind` = 'run' and attributes.status = 'FINISHED'") if exp else []

    driver = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(finished()) < 3 and driver.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        server.stop_mlflow(folder)  # the tracking server goes away mid-study
        _, stderr = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1 and "Traceback" not in stderr, stderr[-800:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "finished runs are kept" in errors[0]
    # what went wrong, as README's "When the store fails" says it (it said 'the MLflow store failed: API request to ...
    # failed with exception', the cause cut off)
    assert errors[0].startswith(f"error: the tracking server cannot be reached: {uris['MLFLOW_TRACKING_URI'].rstrip('/')}"), errors[0]

    server.start(folder)
    kept = {r.data.tags["suite.run_key"] for r in finished()}
    assert len(kept) >= 3, "what was recorded before the outage stays"
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-800:]
    assert f"{len(kept)} already done" in again.stdout
    runs = finished()
    assert len(runs) == KEYS and len({r.data.tags["suite.run_key"] for r in runs}) == KEYS and kept <= {r.data.tags["suite.run_key"] for r in runs}


@needs_mnist
@pytest.mark.slow
def test_push_moves_a_laptop_study_to_the_team_store_once(team_store, tiny_study, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from suite.cli import main

    _, uris = team_store
    monkeypatch.setenv("SUITE_DATA_DIR", str(DATA_DIR))
    laptop = f"sqlite:///{tmp_path}/laptop.db"
    common = ["--studies-dir", str(tiny_study.parent), "--tracking-uri", laptop]
    assert main(["study", "tiny", "--smoke", "--workers", "1", *common, "--reports-dir", str(tmp_path / "r")]) == 0
    assert main(["push", "tiny", "--to", uris["MLFLOW_TRACKING_URI"], *common]) == 0
    assert main(["push", "tiny", "--to", uris["MLFLOW_TRACKING_URI"], *common]) == 0  # idempotent: copies nothing more
    pushed = capsys.readouterr().out
    assert "4 runs copied" in pushed and "0 runs copied" in pushed and "4 already there" in pushed

    source, target = MlflowClient(laptop), MlflowClient(uris["MLFLOW_TRACKING_URI"])
    ours = {r.data.tags["suite.run_key"]: r for r in source.search_runs(
        [source.get_experiment_by_name("tiny/smoke").experiment_id], "tags.`suite.kind` = 'run'")}
    theirs = {r.data.tags["suite.run_key"]: r for r in target.search_runs(
        [target.get_experiment_by_name("tiny/smoke").experiment_id], "tags.`suite.kind` = 'run'")}
    assert set(theirs) == set(ours) and len(ours) == 4
    for key, run in ours.items():
        copy = theirs[key]
        assert copy.data.metrics == run.data.metrics and copy.data.params == run.data.params and copy.info.status == "FINISHED"
        assert ([m.value for m in target.get_metric_history(copy.info.run_id, "train_loss_step")]
                == [m.value for m in source.get_metric_history(run.info.run_id, "train_loss_step")])
        assert {a.path for a in target.list_artifacts(copy.info.run_id)} == {a.path for a in source.list_artifacts(run.info.run_id)}
    # and back from the team store (its artifacts are mlflow-artifacts:/ URIs, listed through the server) to a new laptop
    back = ["push", "tiny", "--to", f"sqlite:///{tmp_path}/back.db", "--studies-dir", str(tiny_study.parent),
            "--tracking-uri", uris["MLFLOW_TRACKING_URI"]]
    assert main(back) == 0 and "4 runs copied" in capsys.readouterr().out
    # the team store's driver finds them done: nothing to train
    out = main(["study", "tiny", "--smoke", "--workers", "1", "--studies-dir", str(tiny_study.parent), "--tracking-uri",
                uris["MLFLOW_TRACKING_URI"], "--storage", uris["OPTUNA_STORAGE"], "--reports-dir", str(tmp_path / "team")])
    assert out == 0 and "tiny: 0 trained, 4 already done" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "team" / "smoke" / "tiny" / "runs.csv")) == 4


def test_a_lease_table_that_cannot_be_opened_or_a_bad_lease_time_is_one_line():
    """A team store's PostgreSQL down (nothing listens on port 1), or a wrong password: a SuiteError naming the
    database with its password hidden, never a traceback."""
    from suite.errors import SuiteError
    from suite.execute.leases import Shared

    from suite.errors import OptionError
    from suite.execute.leases import ttl

    for bad in ("inf", "-1", "soon", "1e-9"):  # (inf was taken: claims that never expire; 1e-9 a heartbeat that spins)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SUITE_LEASE_SECONDS", bad)
            with pytest.raises(OptionError, match=f"^\\$SUITE_LEASE_SECONDS='{bad}': a number of seconds, 1 or more"):
                ttl()
    with pytest.raises(SuiteError) as err:
        Shared("postgresql+psycopg://suite:s3cret@127.0.0.1:1/optuna")
    message = str(err.value)
    assert message == ("cannot reach the PostgreSQL database that keeps run claims, postgresql+psycopg://suite:***@127.0.0.1:1/optuna "
                       "(Connection refused); start it (`make server` for a team store here) or point the suite at another"), message
    assert "s3cret" not in message and "\n" not in message


def test_leases_take_over_expired_claims_and_fence_out_their_old_holder(team_store, monkeypatch):
    """On the real PostgreSQL: a claim is exclusive while alive; once expired the next driver gets a higher token and
    the old holder can record nothing; a completed key is never claimed again (except by --force)."""
    from suite.errors import SuiteError
    from suite.execute.leases import Shared

    _, uris = team_store
    # a database that answers but refuses us is not 'cannot reach ... start it'
    wrong = uris["OPTUNA_STORAGE"].replace("suite:", "suite:x", 1)
    with pytest.raises(SuiteError, match="^cannot open the lease table in postgresql\\+psycopg://suite:\\*\\*\\*@.*password authentication failed"):
        Shared(wrong)
    monkeypatch.setenv("SUITE_LEASE_SECONDS", "1")
    first, second = Shared(uris["OPTUNA_STORAGE"]), Shared(uris["OPTUNA_STORAGE"])  # two drivers, no heartbeat running
    key = f"run/test#{time.time()}/abc"
    old = first.claim(key)
    assert old == 1 and second.claim(key) is None and second.alive([key]) == {key}
    time.sleep(1.5)  # the first driver stalls past its expiry
    assert second.alive([key]) == set()
    new = second.claim(key)
    assert new == 2
    assert not first.fence(key, old) and key in first.lost, "a driver whose claim was taken over cannot record"
    assert not first.complete(key, old)
    assert second.fence(key, new) and second.complete(key, new)
    assert first.claim(key) is None, "a finished run is never trained twice"
    assert first.claim(key, force_since=time.time() + 5) == 3, "--force takes it once more"
    with first.mutex("m"):  # advisory lock: the second waits (here: a non-blocking try fails)
        with second.engine.connect() as conn:
            import sqlalchemy as sa
            import hashlib

            number = int.from_bytes(hashlib.sha256(b"m").digest()[:8], "big", signed=True)
            assert conn.execute(sa.text("SELECT pg_try_advisory_lock(:n)"), {"n": number}).scalar() is False
    for leases in (first, second):
        leases.engine.dispose()


def test_a_driver_that_stalls_past_its_trial_lease_can_no_longer_record_the_trial(team_store, monkeypatch):
    """On the real PostgreSQL and Optuna storage: a driver that stalls past its lease finds its trial failed as interrupted
    by the next driver (which takes the lease over first, so the old holder's fence fails), and telling Optuna late is a
    quiet False, not UpdateFinishedTrialError (a kill -9 torture run once ended a driver on that traceback); a trial run
    the stalled driver deleted meanwhile is no error for the driver that ends it."""
    import optuna

    from suite import tracking
    from suite.execute.leases import Shared
    from suite.execute.worker import FAILED, FINISHED, Record
    from suite.tune import _tell, counted, fail_stale, interrupted, trial_key

    _, uris = team_store
    monkeypatch.setenv("SUITE_LEASE_SECONDS", "1")
    storage, name = uris["OPTUNA_STORAGE"], f"stall-{time.time()}"
    client = tracking.connect(uris["MLFLOW_TRACKING_URI"])
    exp_id = tracking.experiment_id(client, name)
    first, second = Shared(storage), Shared(storage)  # two drivers, no heartbeat running
    mine = optuna.create_study(study_name=name, storage=storage)
    theirs = optuna.load_study(study_name=name, storage=storage)
    trials = [mine.ask(), mine.ask()]
    runs = [client.create_run(exp_id).info.run_id for _ in trials]
    for trial, run_id in zip(trials, runs):
        trial.set_user_attr("mlflow_run_id", run_id)
    client.delete_run(runs[0])  # as the driver that lost it does (`Recorder.drop`) while another ends it
    tokens = [first.claim(trial_key(name, mine._study_id, t.number, storage)) for t in trials]
    fail_stale(theirs, second, name, client, exp_id, storage)
    assert [t.state for t in theirs.get_trials()] == [optuna.trial.TrialState.RUNNING] * 2, "live leases: left alone"

    time.sleep(1.5)  # the first driver stalls past its expiry
    fail_stale(theirs, second, name, client, exp_id, storage)
    assert all(interrupted(t) for t in theirs.get_trials()) and counted(theirs.get_trials()) == 0
    assert client.get_run(runs[1]).info.status == "KILLED" and client.get_run(runs[0]).info.lifecycle_stage == "deleted"
    keys = [trial_key(name, mine._study_id, t.number, storage) for t in trials]
    assert not first.fence(keys[0], tokens[0]) and keys[0] in first.lost, "the stalled driver cannot record the trial"
    done = Record(trials[0].number, FINISHED, history=[{"val_loss": 0.5}], final={"tested_epoch": 1})
    assert _tell(mine, trials[0], done, "val_loss") is False
    assert _tell(mine, trials[1], Record(trials[1].number, FAILED, reason="boom"), "val_loss") is False
    assert all(interrupted(t) for t in theirs.get_trials()), "nothing the stalled driver did changed the failed trials"
    assert first.claim(keys[1]) is None, "a trial failed as interrupted is not claimed again"
    for leases in (first, second):
        leases.engine.dispose()
