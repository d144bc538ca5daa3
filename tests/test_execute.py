"""The executor with real parts: serial, a local pool of spawned processes and a real local Ray
cluster (`ray start --head`, as a cluster user starts it) train the same runs to the same numbers;
a raising run and a kill -9 of a live worker fail only their run; Ctrl-C and SIGTERM on the
driver leave no process behind and keep what finished; run keys keep their legacy values."""

import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from suite.spec.config import Execution, RunConfig
from suite.execute.backends import LocalPool, RayBackend, Serial
from suite.execute.kernels import kernel_name
from suite.execute.worker import FINISHED, Task
from suite.spec.study import load_study, run_key, with_execution

from conftest import ROOT, needs_mnist, store_at

pytestmark = pytest.mark.slow


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


needs_ray = pytest.mark.skipif(not ray_available() and os.environ.get("CI") != "true",
                               reason="Ray is not installed (pip install -e '.[ray]'); in CI this fails instead")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A real Ray head on this machine, started and stopped the way the README tells a cluster user."""
    import ray  # noqa: F401  (fails the test in CI when Ray is missing)

    ray_bin = str(Path(sys.executable).parent / "ray")
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    # without token authentication, which Ray >= 2.59 turns on where ~/.ray/auth_token exists (any local Ray leaves one),
    # while this driver joins by explicit address (README: `auto` on the head's machine sends the token)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    f"--temp-dir={temp}", "--disable-usage-stats"], check=True, capture_output=True, env=env, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env, timeout=120)


def tiny_tasks(data_dir) -> list[Task]:
    base = {"data": {"name": "mnist", "train_size": 300, "val_size": 200, "test_size": 300},
            "model": {"name": "mlp", "hidden": [32], "dropout": 0.2}, "optimizer": {"name": "adam", "lr": 0.01},
            "train": {"batch_size": 20, "epochs": 2}}
    configs = [RunConfig(**base), RunConfig(**{**base, "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.01}})]
    return [Task(i, f"t{i}", c, seed, str(data_dir)) for i, (c, seed) in enumerate((c, s) for c in configs for s in (0, 1))]


def run_all(backend, tasks) -> dict:
    records, events = {}, []
    pending = iter(tasks)

    def handle(task, kind, payload):
        events.append((task.id, kind))
        if kind == "done":
            records[task.id] = payload
        return False

    backend.run(lambda: next(pending, None), handle)
    return records, events


def numbers(record) -> tuple:
    strip = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in record.history]
    return record.status, strip, record.steps, {k: v for k, v in record.final.items() if k != "train_seconds"}


@needs_mnist
@needs_ray
def test_every_backend_trains_the_same_numbers_in_the_processes_it_says(data_dir, ray_cluster):
    tasks = tiny_tasks(data_dir)
    serial, events = run_all(Serial(), tasks)
    assert all(r.status == FINISHED for r in serial.values()) and len(serial) == 4
    assert {r.where["pid"] for r in serial.values()} == {os.getpid()}
    # every run streamed its step losses and epochs before it was done
    assert [kind for tid, kind in events if tid == 0] == ["started", "steps", "epoch", "steps", "epoch", "done"]
    pool, _ = run_all(LocalPool(2, 1), tasks)
    ray_records, _ = run_all(RayBackend(2, 1, ray_cluster), tasks)
    for other in (pool, ray_records):
        assert {i: numbers(r) for i, r in other.items()} == {i: numbers(r) for i, r in serial.items()}
        assert os.getpid() not in {r.where["pid"] for r in other.values()}
        assert {r.where["threads"] for r in other.values()} == {1}
    assert len({r.where["pid"] for r in pool.values()}) == 2  # both workers of the pool trained
    # the adam runs say which Adam step their worker used (suite.execute.kernels: the same numbers either way); sgd's do not
    for records in (serial, pool, ray_records):
        assert [records[i].where.get("adam_kernel") for i in range(4)] == [kernel_name()] * 2 + [None] * 2


@needs_mnist
def test_a_pool_takes_over_the_workers_spawned_before_it_and_stops_the_rest(data_dir):
    """What a driver on a GPU machine does while torch checks CUDA: a worker spawned first; the pool trains on it."""
    from suite.execute.backends import spawn_early

    early = spawn_early(1) + spawn_early(1)
    pool = LocalPool(1, 1)
    pool.start(spawned=early)
    assert pool.slots == early[:1] and not early[1].process.is_alive()  # the pool's size: the second one is stopped
    records, _ = run_all(pool, tiny_tasks(data_dir)[:2])
    assert [r.status for r in records.values()] == [FINISHED, FINISHED]
    assert {r.where["pid"] for r in records.values()} == {early[0].process.pid}
    assert not early[0].process.is_alive()  # run() stops the pool's workers when it is done


FAULTY = """
name: faulty
question: Does a run that raises take the study down?
datasets: [quadratic]
seeds: 2
metric: test_mse
base:
  data: {train_size: 1000, val_size: 100, test_size: 100}
  model: {name: mlp, hidden: [8]}
  optimizer: {name: sgd, lr: 0.05}
  train: {batch_size: 10, epochs: EPOCHS}
variants:
  mlp: {}
  raiser: {model: {name: raiser}}
smoke: {seeds: 2, epochs: EPOCHS}
"""

FAULTY_PARTS = """
from typing import Literal
from pydantic import BaseModel, ConfigDict
from suite.components import Component


class Raiser(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["raiser"]
    hidden: list[int] = []  # (the base's, merged in)


def build(cfg, in_shape, outputs):
    raise ValueError("this model raises when it is built")


COMPONENTS = [Component("model", "raiser", "faulty_parts:build", "a model whose constructor raises", Raiser)]
"""  # (a CNN on 1-D data raised so before it was refused when the study loads)


def study_file(tmp_path, epochs: int, variants: str | None = None) -> Path:
    path = tmp_path / "faulty.yaml"
    text = FAULTY.replace("EPOCHS", str(epochs))
    if variants:
        text = text[:text.index("variants:")] + variants + text[text.index("smoke:"):]
    if "raiser" in text:  # its plug-in, importable where faulty_env says
        text += "plugins: [faulty_parts]\n"
        (tmp_path / "faulty_parts.py").write_text(FAULTY_PARTS)
    path.write_text(text)
    return path


def faulty_env(tmp_path) -> dict:
    """The environment in which the study's plug-in (in tmp_path) can be imported."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH"))))}


def suite_cmd(path, tmp_path, *extra) -> list[str]:
    return [sys.executable, "-m", "suite", "study", str(path), "--tracking-uri", store_at(tmp_path / "m.db"),
            "--reports-dir", str(tmp_path / "reports"), "--data-dir", str(tmp_path), *extra]


def runs_of(tmp_path, name="faulty"):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/m.db")
    return mlflow.search_runs(experiment_names=[name], filter_string="tags.`suite.kind` = 'run'")


def test_a_raising_run_fails_alone_and_the_next_call_retries_it(tmp_path):
    path = study_file(tmp_path, 2)
    env = faulty_env(tmp_path)
    out = subprocess.run(suite_cmd(path, tmp_path, "--workers", "2"), capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2 runs failed" in errors[0] and "this model raises when it is built" in errors[0], out.stderr
    assert "faulty: 2 trained, 0 already done, 0 diverged, 2 failed" in out.stdout
    runs = runs_of(tmp_path)
    by_status = runs.groupby("status")["tags.suite.variant"].apply(sorted).to_dict()
    assert by_status == {"FAILED": ["raiser", "raiser"], "FINISHED": ["mlp", "mlp"]}
    assert runs[runs["status"] == "FAILED"]["tags.suite.error"].str.contains("ValueError: this model raises when it is built").all()
    assert (tmp_path / "reports" / "faulty" / "report.md").exists()  # the report shows what finished
    # the store keeps its artifacts beside its database file, not in the folder the command ran in (ROOT)
    assert runs["artifact_uri"].str.startswith(f"{tmp_path}/mlruns/").all(), runs["artifact_uri"][0]
    # `suite evaluate` takes a finished run of a study: a failed one, or the report's own run, is one line
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/m.db")
    summary = mlflow.search_runs(experiment_names=["faulty"], filter_string="tags.`suite.kind` = 'summary'")["run_id"][0]
    failed = runs[runs["status"] == "FAILED"]["run_id"].iloc[0]
    for run_id, says in [(failed, f"run {failed} is FAILED: only a finished run has tested weights"),
                         (summary, f"run {summary} is a study's report run: `suite evaluate` takes a study's run")]:
        out = subprocess.run([sys.executable, "-m", "suite", "evaluate", run_id, "--tracking-uri", store_at(tmp_path / "m.db")],
                             capture_output=True, text=True, cwd=ROOT, env=env)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and says in out.stderr, out.stderr
    # a report asked for runs computed another way says so, not "run the study first"
    report = [sys.executable, "-m", "suite", "report", str(path), "--pack", "--tracking-uri", store_at(tmp_path / "m.db"),
              "--reports-dir", str(tmp_path / "reports")]
    other = subprocess.run(report, capture_output=True, text=True, cwd=ROOT, env=env)
    assert other.returncode == 1 and other.stderr.count("\n") == 1, other.stderr
    assert "none of the 2 finished runs of study 'faulty'" in other.stderr and "computed on cpu with 1 thread, packed" in other.stderr
    # the next call retrains the failed runs only (and they fail again, replacing the old records)
    again = subprocess.run(suite_cmd(path, tmp_path, "--workers", "2"), capture_output=True, text=True, cwd=ROOT, env=env)
    assert again.returncode == 1 and "0 trained, 2 already done, 0 diverged, 2 failed" in again.stdout
    assert len(runs_of(tmp_path)) == 4


def test_a_study_whose_every_run_fails_says_so_and_writes_no_report(tmp_path):
    """Nothing of the study as it is now finished: the summary line and the failures, not a report error telling to run
    the command just run; the report of what an earlier version of the study file trained stays as it was."""
    path = study_file(tmp_path, 1, "variants:\n  mlp: {}\n")
    assert subprocess.run(suite_cmd(path, tmp_path), capture_output=True, text=True, cwd=ROOT).returncode == 0
    earlier = (tmp_path / "reports" / "faulty" / "report.md").read_text()
    path = study_file(tmp_path, 1, "variants:\n  raiser: {model: {name: raiser}}\n")
    out = subprocess.run(suite_cmd(path, tmp_path), capture_output=True, text=True, cwd=ROOT, env=faulty_env(tmp_path))
    assert out.returncode == 1 and "faulty: 0 trained, 0 already done, 0 diverged, 2 failed" in out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2 runs failed" in errors[0] and "this model raises when it is built" in errors[0], out.stderr
    assert (tmp_path / "reports" / "faulty" / "report.md").read_text() == earlier


def wait_for(predicate, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def training_pids(tmp_path) -> list[int]:
    """Worker pids of runs RUNNING in the store that have streamed a training loss already."""
    try:
        runs = runs_of(tmp_path)
    except Exception:  # the store is being created
        return []
    if runs.empty or "metrics.train_loss_step" not in runs:
        return []
    live = runs[(runs["status"] == "RUNNING") & runs["metrics.train_loss_step"].notna()]
    # (the store is read table by table while the driver writes: a run's metrics can show before its tags do, and
    # before any run has the tag the column is not there at all)
    return [int(p) for p in live["tags.suite.pid"].dropna()] if "tags.suite.pid" in live else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


LONG = """variants:
  a: {}
  b: {optimizer: {lr: 0.02}}
"""  # 2 variants x 2 seeds, ~5 s each (100 epochs of 100 steps)


def test_kill_9_of_a_live_worker_fails_its_run_only(tmp_path):
    path = study_file(tmp_path, 100, LONG)
    driver = subprocess.Popen(suite_cmd(path, tmp_path, "--workers", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT)
    victim = wait_for(lambda: training_pids(tmp_path), what="a worker to start training")[0]
    assert victim != driver.pid
    os.kill(victim, signal.SIGKILL)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 1 and "Traceback" not in err
    assert "1 run failed (first: " in err and "killed by signal 9" in err
    runs = runs_of(tmp_path)
    assert sorted(runs["status"]) == ["FAILED"] + ["FINISHED"] * 3
    failed = runs[runs["status"] == "FAILED"].iloc[0]
    assert failed["tags.suite.pid"] == str(victim) and "killed by signal 9" in failed["tags.suite.error"]
    # metrics streamed while it trained (the victim was picked by its step loss): kept although it never finished
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path}/m.db")
    assert len(client.get_metric_history(failed["run_id"], "train_loss_step")) >= 1
    # (that the next call retrains a failed run, and only it, is pinned by the raising-run test above)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupting_the_driver_stops_every_worker_and_keeps_what_finished(tmp_path, sig):
    path = study_file(tmp_path, 100, LONG)
    driver = subprocess.Popen(suite_cmd(path, tmp_path, "--workers", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT)
    # wait until one run has finished and the next ones train
    wait_for(lambda: (runs_of(tmp_path)["status"] == "FINISHED").any() if training_pids(tmp_path) else False,
             what="a finished run and a training one")
    workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(driver.pid)], capture_output=True, text=True).stdout.split()]
    assert workers
    driver.send_signal(sig)
    out, err = driver.communicate(timeout=60)
    assert driver.returncode == 130 and "interrupted" in err and "Traceback" not in err
    wait_for(lambda: not any(alive(p) for p in workers), timeout=10, what="the workers to exit")
    runs = runs_of(tmp_path)
    assert "RUNNING" not in set(runs["status"]) and "KILLED" in set(runs["status"])
    finished = set(runs[runs["status"] == "FINISHED"]["run_id"])
    assert finished
    if sig == signal.SIGTERM:
        return  # the same handler as Ctrl-C: resuming is checked once, there
    again = subprocess.run(suite_cmd(path, tmp_path, "--workers", "2"), capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0 and f"{len(finished)} already done" in again.stdout
    after = runs_of(tmp_path)
    assert sorted(after["status"]) == ["FINISHED"] * 4 and finished <= set(after["run_id"])


@needs_ray
def test_ray_client_without_its_extra_is_one_line_that_names_it(tmp_path):
    """`ray://` needs ray[client], which .[ray] does not install: the error line blamed a Ray token instead."""
    import importlib.util

    if importlib.util.find_spec("grpc") is not None:
        pytest.skip("ray[client] is installed here: ray:// would try to connect")
    path = study_file(tmp_path, 2, "variants:\n  a: {}\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"} | {"RAY_AUTH_TOKEN": "x"}  # (a token: the old hint's case)
    out = subprocess.run(suite_cmd(path, tmp_path, "--executor", "ray", "--ray-address", "ray://127.0.0.1:1"), capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=300)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "ray[client]" in errors[0] and "RAY_AUTH_MODE" not in errors[0], errors[0]


@needs_ray
def test_a_separate_driver_runs_a_study_on_the_ray_cluster(tmp_path, ray_cluster):
    path = study_file(tmp_path, 2, "variants:\n  a: {}\n  b: {optimizer: {lr: 0.02}}\n")
    out = subprocess.run(suite_cmd(path, tmp_path, "--executor", "ray", "--ray-address", ray_cluster), capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    runs = runs_of(tmp_path)
    assert sorted(runs["status"]) == ["FINISHED"] * 4
    serial = subprocess.run(suite_cmd(path, tmp_path / "s", "--executor", "serial"), capture_output=True, text=True, cwd=ROOT)
    assert serial.returncode == 0, serial.stderr
    ours = runs_of(tmp_path / "s")
    merged = runs.merge(ours, on="tags.suite.run_key")
    assert len(merged) == 4 and (merged["metrics.test_loss_x"] == merged["metrics.test_loss_y"]).all()
    assert set(runs["tags.suite.pid"]).isdisjoint(set(ours["tags.suite.pid"]))


def test_threads_and_device_enter_the_run_key_only_away_from_their_legacy_values():
    config = RunConfig(data={"name": "mnist"}, model={"name": "mlp"})
    legacy = run_key(config, 0)
    assert run_key(with_execution(config, Execution(threads=1, device="cpu")), 0) == legacy
    assert run_key(with_execution(config, Execution(threads=2)), 0) != legacy
    assert run_key(with_execution(config, Execution(device="cuda")), 0) != legacy
    # a study that asks for the CPU explicitly keeps it whatever the executor's device
    explicit = RunConfig(data={"name": "mnist"}, model={"name": "mlp"}, train={"device": "cpu"})
    assert with_execution(explicit, Execution(device="cuda")).execution.device == "cpu"


def test_the_driver_needs_no_torch_to_find_no_gpu():
    """Without a GPU device node `--device auto` means the CPU, decided without importing torch (~3 s of a driver's start)."""
    from suite.execute import _no_gpu_here

    if not _no_gpu_here():
        pytest.skip("this machine has a GPU device node: torch decides")
    probe = ("import sys; from suite.execute import Settings, execution; "
             "print(execution(Settings()).device, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["cpu", "False"], out.stderr


def test_on_a_machine_that_may_have_a_gpu_a_first_worker_answers_the_cuda_check(tmp_path):
    """Where a GPU device node exists the driver does not import torch (~2-3 s) to ask about CUDA: the worker it spawns
    first imports torch anyway and answers, while the driver imports MLflow. Played here by hiding that there is none."""
    path = study_file(tmp_path, 1, "variants:\n  mlp: {}\n")
    probe = ("import sys; import suite.execute as e; e._no_gpu_here = lambda: False; from suite.cli import main; "
             f"code = main({suite_cmd(path, tmp_path)[3:]!r}); print('driver torch', 'torch' in sys.modules, e._cuda); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "faulty: 2 trained" in out.stdout and "driver torch False [False]" in out.stdout
    runs = runs_of(tmp_path)
    assert list(runs["status"]) == ["FINISHED"] * 2 and set(runs["tags.suite.device"].str[:3]) == {"cpu"}


def test_an_early_worker_that_dies_before_it_answers_leaves_the_cuda_check_to_the_driver(monkeypatch):
    import torch

    from suite import execute
    from suite.execute.backends import cuda_answer, spawn_early, stop_early

    early, dead = spawn_early(1), spawn_early(1)
    try:
        assert cuda_answer(early) is torch.cuda.is_available()
        dead[0].process.kill()
        dead[0].process.join()
        answers = []  # an answer it sent before it was killed (torch imports fast when cached) is read first
        while (answer := cuda_answer(dead)) is not None:
            answers.append(answer)
        assert len(answers) <= 1
        monkeypatch.setattr(execute, "_cuda", [])
        assert execute.cuda_here(lambda: cuda_answer(dead)) is torch.cuda.is_available()  # torch in this process
        assert execute.cuda_here(lambda: not torch.cuda.is_available()) is torch.cuda.is_available()  # asked once
    finally:
        stop_early(early + dead)


def test_study_files_cannot_set_how_runs_are_computed(tmp_path):
    from suite.errors import StudyError

    path = study_file(tmp_path, 2, "variants:\n  a: {execution: {fused_optimizer: true}}\n")
    with pytest.raises(StudyError, match="variants.a.execution: a study computes all its runs alike; set execution.fused_optimizer in base"):
        load_study(str(path))
    for block, says in [("{threads: 2}", "base.execution.threads: how runs are computed is chosen when running"),
                        ("{fused_optimizer: maybe}", "base.execution.fused_optimizer: Input should be a valid boolean"),
                        ("fused", "base.execution: a mapping")]:
        path.write_text(study_file(tmp_path, 1, "variants:\n  a: {}\n").read_text().replace("  train:", f"  execution: {block}\n  train:"))
        with pytest.raises(StudyError, match=says):
            load_study(str(path))


def test_a_study_may_fix_the_fused_optimizer_for_all_its_runs(tmp_path):
    """base.execution.fused_optimizer: every run with a fused kernel gets it (and another key), the others keep theirs;
    --fused-optimizer does the same for a study without it; packed runs step their own optimizer."""
    from suite.spec.study import expand

    path = study_file(tmp_path, 1, "variants:\n  sgd: {}\n  rmsprop: {optimizer: {name: rmsprop, lr: 0.01}}\n")
    plain = {s.run_name: s for s in expand(load_study(str(path)))}
    by_flag = {s.run_name: s.run_key for s in expand(load_study(str(path)), execution=Execution(fused_optimizer=True))}
    path.write_text(path.read_text().replace("  train:", "  execution: {fused_optimizer: true}\n  train:"))
    study = load_study(str(path))
    fixed = {s.run_name: s for s in expand(study)}
    assert fixed["sgd/seed=0"].config.execution.fused_optimizer and fixed["sgd/seed=0"].run_key != plain["sgd/seed=0"].run_key
    assert not fixed["rmsprop/seed=0"].config.execution.fused_optimizer  # no fused kernel: the flag is dropped, the key kept
    assert fixed["rmsprop/seed=0"].run_key == plain["rmsprop/seed=0"].run_key
    assert by_flag == {name: s.run_key for name, s in fixed.items()}
    packed = {s.run_name: s.config.execution for s in expand(study, execution=Execution(packed=True))}
    assert packed["sgd/seed=0"].packed and not packed["sgd/seed=0"].fused_optimizer
    # a run that cannot be packed trains alone in a packed call, with the fused kernel its study fixes
    text = study_file(tmp_path, 1, "variants:\n  norm: {model: {norm: batch}}\n").read_text()  # (an MLP with norm is not packed)
    path.write_text(text.replace("  train:", "  execution: {fused_optimizer: true}\n  train:"))
    alone = expand(load_study(str(path)), execution=Execution(packed=True))[0]
    assert not alone.config.execution.packed and alone.config.execution.fused_optimizer
    assert alone.run_key == expand(load_study(str(path)))[0].run_key
    assert "execution.fused_optimizer" not in study.scientific()  # not a difference between variants: no report column


def test_threads_are_recorded_by_the_worker_and_change_the_key(tmp_path):
    path = study_file(tmp_path, 2, "variants:\n  a: {}\n")
    out = subprocess.run(suite_cmd(path, tmp_path, "--threads", "2", "--workers", "1"), capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    runs = runs_of(tmp_path)
    assert set(runs["tags.suite.threads"]) == {"2"} and set(runs["params.execution.threads"]) == {"2"}
    assert all(d.endswith(", 2 threads") for d in runs["tags.suite.device"])
    legacy = {s.run_key for s in __import__("suite.spec.study", fromlist=["expand"]).expand(load_study(str(path)))}
    assert legacy.isdisjoint(set(runs["tags.suite.run_key"]))


def test_the_cpu_kernels_are_recorded_and_a_report_over_two_kinds_warns(tmp_path):
    """PyTorch picks its CPU kernels for the processor (AVX2, AVX512, ...) and they round sums differently, so the device
    tag names them, and a report whose runs were computed with two kinds says so under its Devices line."""
    path = study_file(tmp_path, 1, "variants:\n  a: {}\n")
    two_seeds = path.read_text()
    path.write_text(two_seeds.replace("seeds: 2", "seeds: 1"))
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}  # the plain C++ kernels, which every CPU can run
    out = subprocess.run(suite_cmd(path, tmp_path), capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert "Warning:** these runs were computed on" not in (tmp_path / "reports/faulty/report.md").read_text()
    path.write_text(two_seeds)
    out = subprocess.run(suite_cmd(path, tmp_path), capture_output=True, text=True, cwd=ROOT)  # seed 1, this CPU's own kernels
    assert out.returncode == 0, out.stderr
    here = torch.backends.cpu.get_cpu_capability()
    runs = runs_of(tmp_path)
    devices = dict(zip(runs["tags.suite.seed"], runs["tags.suite.device"]))
    assert devices == {"0": f"cpu: {platform.processor() or platform.machine()} (DEFAULT kernels), 1 thread",
                       "1": f"cpu: {platform.processor() or platform.machine()} ({here} kernels), 1 thread"}
    report = (tmp_path / "reports/faulty/report.md").read_text()
    assert ("**Warning:** these runs were computed on 2 kinds of device" in report) == (here != "DEFAULT")


def test_core_slots_keep_training_runs_at_the_number_of_cores_across_drivers(tmp_path, monkeypatch):
    """Every training run holds `threads` of the host's core slots (lock files); one more waits until a slot is free."""
    import threading

    from suite.execute import cores
    from suite.execute.worker import SLOTS_ENV, core_slots

    monkeypatch.setenv(SLOTS_ENV, str(tmp_path))
    entered = threading.Event()

    def another_run():
        with core_slots(1):
            entered.set()

    with core_slots(cores()):  # as if other drivers' runs held every core
        waiting = threading.Thread(target=another_run)
        waiting.start()
        assert not entered.wait(1.0)
    waiting.join(10)
    assert entered.is_set()
    assert len(list(tmp_path.glob("*.lock"))) == cores()
