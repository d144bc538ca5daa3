"""Packed runs (suite/execute/packed.py) on real MNIST: each member trains like its unpacked run up to
floating-point summation order, independently of which runs share its pack; divergence and early
stopping are per member; packing enters the run key only away from its legacy value; `suite
study --pack` records one MLflow run per member and the report says the runs were packed."""

import math
import os
import signal
import subprocess
import sys

import mlflow
import pytest
import torch

from suite.spec.config import PACKED_OPTIMIZERS, Execution, RunConfig, pack_group
from suite.execute import Settings
from suite.execute.backends import LocalPool
from suite.execute.plan import units, unpacking
from suite.execute.worker import DIVERGED, FINISHED, Pack, Task, execute, loaded
from suite.spec.study import RunSpec, run_key, with_execution

from conftest import ROOT, needs_mnist, store_at

BASE = {"data": {"name": "mnist", "train_size": 400, "val_size": 200, "test_size": 300},
        "model": {"name": "mlp", "hidden": [32, 16]}, "optimizer": {"name": "adam", "lr": 1e-4},
        "train": {"batch_size": 20, "epochs": 2}}


def config(packed: bool, **changes) -> RunConfig:
    tree = {key: {**value, **changes.get(key, {})} for key, value in BASE.items()}
    return with_execution(RunConfig(**tree), Execution(packed=packed))


def members(data_dir, packed: bool) -> list[Task]:
    """Four runs that differ only in per-member fields: seed, weight decay, dropout, augmentation, lr."""
    variants = [({}, 0), ({"optimizer": {"weight_decay": 0.01}}, 1), ({"model": {"dropout": 0.3}}, 2),
                ({"data": {"augment": {"rotation": 10}}, "optimizer": {"lr": 2e-4}}, 3)]
    return [Task(i, f"m{i}", config(packed, **changes), seed, str(data_dir), keep_weights=True)
            for i, (changes, seed) in enumerate(variants)]


def untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in epoch.items() if k != "epoch_seconds"} for epoch in history]


def run(task, events=None):
    return execute(task, lambda kind, payload: events.append((kind, payload)) if events is not None else None)


@needs_mnist
def test_a_pack_trains_each_member_like_its_unpacked_run_up_to_rounding(data_dir):
    unpacked = [run(task) for task in members(data_dir, packed=False)]
    tasks = members(data_dir, packed=True)
    events: list = []
    pack = run(Pack(100, "pack of 4", tuple(tasks)), events)
    assert len({pack_group(t.config) for t in tasks}) == 1
    assert [r.task_id for r in pack.members] == [0, 1, 2, 3]
    for alone, member in zip(unpacked, pack.members):
        assert alone.status == member.status == FINISHED
        # the first steps' losses (initial weights, same draws) within 1e-4 relative; step 1 sees the initial weights
        assert len(alone.steps) == len(member.steps) > 1
        for (step_a, loss_a), (step_p, loss_p) in zip(alone.steps, member.steps):
            assert step_a == step_p and math.isclose(loss_a, loss_p, rel_tol=1e-4)
        assert len(alone.history) == len(member.history) == 2
        for a, p in zip(alone.history, member.history):
            assert math.isclose(a["train_loss"], p["train_loss"], rel_tol=1e-4)
            assert abs(a["val_acc"] - p["val_acc"]) <= 0.01
        assert math.isclose(alone.final["test_loss"], member.final["test_loss"], rel_tol=1e-3)
        mine = loaded(member.weights)
        for name, weight in loaded(alone.weights).items():
            assert torch.allclose(weight, mine[name], rtol=1e-3, atol=1e-5), name
    # each member's record is its own: different seeds and settings give different numbers
    assert len({m.final["test_loss"] for m in pack.members}) == 4
    # events name their member: every member streamed its steps and epochs
    for task in tasks:
        kinds = {kind for kind, (member, _) in events if member == task.id}
        assert kinds == {"started", "steps", "epoch"}


@needs_mnist
def test_a_member_gets_the_same_bits_whichever_runs_share_its_pack(data_dir):
    tasks = members(data_dir, packed=True)
    together = run(Pack(100, "pack of 4", tuple(tasks)))
    pair = run(Pack(101, "pack of 2", (tasks[3], tasks[1])))
    alone = run(tasks[1])  # a packed config on its own: a pack of one
    for record in (pair.members[1], alone):
        assert untimed(record.history) == untimed(together.members[1].history)
        assert record.final["test_loss"] == together.members[1].final["test_loss"]
        weights, reference = loaded(record.weights), loaded(together.members[1].weights)
        assert weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in weights)
    assert pair.members[0].final["test_loss"] == together.members[3].final["test_loss"]


@needs_mnist
def test_a_pack_that_does_not_fit_trains_in_parts_with_the_same_bits(data_dir):
    """What a worker does with a GPU pack larger than its free memory (worker.Pack.fit): the members in consecutive
    packs of `size`, each member's callbacks under its own index, its numbers those of the whole pack."""
    from suite.execute.worker import _splits, _train

    tasks = tuple(members(data_dir, packed=True))
    data, device = _splits(tasks[0].config, tasks[0].data_dir, torch.device("cpu")), torch.device("cpu")
    seen: dict = {}
    calls = dict(on_epoch=lambda i, epoch, metrics: seen.setdefault(i, []).append(metrics["train_loss"]),
                 on_step=lambda i, step, loss: None)
    whole = _train(tasks, data, device, size=4, **calls)
    whole_seen, seen = seen, {}
    parts = _train(tasks, data, device, size=3, **calls)  # a pack of 3, then one of 1
    assert seen == whole_seen and sorted(seen) == [0, 1, 2, 3]
    for a, b in zip(whole, parts):
        timed = {"train_seconds"}
        assert {k: v for k, v in a.final.items() if k not in timed} == {k: v for k, v in b.final.items() if k not in timed}
        assert untimed(a.history) == untimed(b.history) and all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def failing_packs(monkeypatch, fails):
    """train_packed as it is, except that a pack for which `fails(configs)` gives an exception raises it first
    (a fault put into this project's own function: no GPU here runs out of memory on cue). Returns the pack sizes tried."""
    import suite.execute.packed

    real, sizes = suite.execute.packed.train_packed, []

    def train_packed(configs, *args, **kwargs):
        sizes.append(len(configs))
        error = fails(configs)
        if error is not None:
            raise error
        return real(configs, *args, **kwargs)

    monkeypatch.setattr(suite.execute.packed, "train_packed", train_packed)
    return sizes


@needs_mnist
def test_a_pack_out_of_memory_before_its_first_step_trains_again_in_halves(data_dir, monkeypatch):
    tasks = members(data_dir, packed=True)
    whole = run(Pack(100, "pack of 4", tuple(tasks)))
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    # more than two members do not fit, nor does the member with dropout (task 2) even alone
    sizes = failing_packs(monkeypatch, lambda configs: oom if len(configs) > 2 or any(c.model.dropout for c in configs) else None)
    events: list = []
    split = run(Pack(100, "pack of 4", tuple(tasks)), events)
    assert sizes == [4, 2, 2, 1, 1]  # 4 fails; [0, 1] trains; [2, 3] fails; [2] fails alone; [3] trains
    assert [m.status for m in split.members] == [FINISHED, FINISHED, "failed", FINISHED]
    assert split.members[2].reason == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert not split.members[2].fatal and split.members[2].history == []
    for i in (0, 1, 3):  # the same bits as in the pack of 4
        a, b = whole.members[i], split.members[i]
        assert untimed(a.history) == untimed(b.history) and a.final["test_loss"] == b.final["test_loss"]
    # each member's last started event names the pack it trained in, and comes before anything it streamed
    last = {member: payload["pack_size"] for kind, (member, payload) in events if kind == "started"}
    assert last == {0: 2, 1: 2, 2: 1, 3: 1}
    for task in (tasks[0], tasks[1], tasks[3]):
        kinds = [kind for kind, (member, _) in events if member == task.id]
        assert kinds.index("steps") > max(i for i, kind in enumerate(kinds) if kind == "started")


@needs_mnist
def test_a_failing_pack_gives_its_members_the_error_and_the_other_packs_go_on(data_dir, monkeypatch):
    from suite.execute.worker import _splits, _train

    tasks = tuple(members(data_dir, packed=True))
    data, device = _splits(tasks[0].config, tasks[0].data_dir, torch.device("cpu")), torch.device("cpu")
    error = RuntimeError("CUDA error: an illegal memory access was encountered")
    sizes = failing_packs(monkeypatch, lambda configs: error if any(c.model.dropout for c in configs) else None)
    results = _train(tasks, data, device, lambda *a: None, lambda *a: None, size=2)
    assert sizes == [2, 2]  # no second try: only running out of memory splits a pack
    assert results[2] is error and results[3] is error
    assert [r.final["epochs_trained"] for r in results[:2]] == [2, 2]


@needs_mnist
def test_divergence_and_early_stopping_are_per_member(data_dir):
    changes = {"train": {"epochs": 6, "patience": 1}, "optimizer": {"name": "sgd", "lr": 0.05}}
    lrs = (0.05, 1e4, 0.002)  # the second diverges at once
    plain = [Task(i, f"m{i}", config(False, **{**changes, "optimizer": {"name": "sgd", "lr": lr}}), i, str(data_dir))
             for i, lr in enumerate(lrs)]
    packed = [Task(i, f"m{i}", config(True, **{**changes, "optimizer": {"name": "sgd", "lr": lr}}), i, str(data_dir))
              for i, lr in enumerate(lrs)]
    unpacked = [run(task) for task in plain]
    pack = run(Pack(10, "pack", tuple(packed)))
    assert [r.status for r in pack.members] == [FINISHED, DIVERGED, FINISHED] == [r.status for r in unpacked]
    assert pack.members[1].reason == unpacked[1].reason == "non-finite training loss in epoch 1"
    for alone, member in zip(unpacked, pack.members):
        for key in ("epochs_trained", "tested_epoch"):
            assert member.final[key] == alone.final[key], key
    # the survivors went on after the diverged member left the pack, and stopped on their own patience
    epochs = [m.final["epochs_trained"] for m in pack.members]
    assert 1 < epochs[2] < 6 and epochs[0] > epochs[2]  # one stopped early, the other trained on


OPTIMIZER_CASES = {"sgd": {"name": "sgd", "lr": 0.05}, "momentum": {"name": "momentum", "lr": 0.01},
                   "nesterov": {"name": "momentum", "lr": 0.01, "nesterov": True}, "adam": {"name": "adam", "lr": 1e-3},
                   "adamw": {"name": "adamw", "lr": 1e-3}}


def test_every_packed_optimizer_is_covered():
    assert {case["name"] for case in OPTIMIZER_CASES.values()} == PACKED_OPTIMIZERS


@needs_mnist
@pytest.mark.parametrize("case", OPTIMIZER_CASES)
def test_the_packed_optimizer_steps_like_torch_optim(data_dir, case):
    decays = (0.0, 0.05)  # per member: coupled L2 for sgd/momentum/adam, decoupled for adamw
    changes = {"optimizer": OPTIMIZER_CASES[case], "train": {"epochs": 1, "batch_size": 4}}  # 100 steps
    tasks = [Task(i, f"m{i}", config(packed, **{**changes, "optimizer": {**OPTIMIZER_CASES[case], "weight_decay": wd}}),
                  i, str(data_dir)) for packed in (False, True) for i, wd in enumerate(decays)]
    unpacked = [run(t) for t in tasks[:2]]
    pack = run(Pack(9, "pack", tuple(tasks[2:])))
    for alone, member in zip(unpacked, pack.members):
        assert len(alone.steps) == len(member.steps) > 1
        for (_, a), (_, p) in zip(alone.steps, member.steps):
            assert math.isclose(a, p, rel_tol=1e-4), (a, p)
        assert math.isclose(alone.history[0]["train_loss"], member.history[0]["train_loss"], rel_tol=1e-4)
        assert math.isclose(alone.final["test_loss"], member.final["test_loss"], rel_tol=1e-4)
    assert pack.members[0].final["test_loss"] != pack.members[1].final["test_loss"]


@pytest.mark.parametrize("case", OPTIMIZER_CASES)
def test_the_packed_optimizer_updates_in_two_sets_to_the_same_bits_as_tensor_by_tensor(case):
    """The GPU's way (all decayed parameters in one set of kernels, the rest in another) against the CPU's (one
    parameter at a time), here both on the CPU: a member's numbers do not depend on the device's grouping."""
    from suite.execute.packed import Stacked

    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 5, 7), (3, 7), (3, 7, 2), (3, 2)]  # weight, bias, weight, bias of 3 members
    cfgs = [config(True, optimizer={**OPTIMIZER_CASES[case], "weight_decay": wd}).optimizer for wd in (0.0, 0.01, 0.1)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(4)]
    results = []
    for fused in (False, True):
        params = [t.clone().requires_grad_() for t in start]
        opt = Stacked(cfgs, params, decayed=[True, False, True, False], fused=fused)
        assert len(opt.groups) == (2 if fused else 4)
        for step, gs in enumerate(grads):
            for p, g in zip(params, gs):
                p.grad = g.clone()
            opt.step(params, factor=1.0 if step < 2 else 0.5)
        results.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert not torch.equal(results[0][0], start[0])


def test_packing_enters_the_key_only_for_runs_it_can_train():
    plain = RunConfig(**BASE)
    packed = with_execution(plain, Execution(packed=True))
    assert run_key(with_execution(plain, Execution()), 0) == run_key(plain, 0)  # legacy value: the key of every committed run
    assert packed.execution.packed and run_key(packed, 0) != run_key(plain, 0)
    for other in ({"model": {"name": "cnn"}, "data": {"name": "mnist"}}, {"optimizer": {"name": "rmsprop", "lr": 0.01}}):
        unpackable = RunConfig(**{**BASE, **other})
        resolved = with_execution(unpackable, Execution(packed=True))
        assert not resolved.execution.packed and run_key(resolved, 0) == run_key(unpackable, 0)


def spec(i: int, cfg: RunConfig) -> tuple[int, RunSpec]:
    return i, RunSpec("s", f"v{i}", "mnist", i, {}, cfg, run_key(cfg, i))


def test_units_pack_runs_that_differ_only_in_per_member_fields():
    same = [spec(i, config(True, optimizer={"lr": 10.0 ** -i}, model={"dropout": 0.1 * i})) for i in range(4)]
    other_epochs = [spec(4, config(True, train={"epochs": 3}))]
    unpacked = [spec(5, config(False))]
    got = units(same + other_epochs + unpacked, Settings(pack_size=8, workers=1), ["mnist"])
    assert sorted(len(u) for u in got) == [1, 1, 4]
    assert [i for i, _ in max(got, key=len)] == [0, 1, 2, 3]
    # a pack size splits the group; on a CPU each worker gets a share
    assert sorted(len(u) for u in units(same, Settings(pack_size=3, workers=1), ["mnist"])) == [2, 2]
    assert sorted(len(u) for u in units(same, Settings(pack_size=8, workers=2), ["mnist"])) == [2, 2]


def test_pack_size_counts_what_a_member_holds_and_the_driver_needs_no_torch_for_it():
    """A member needs 4 bytes per weight, gradient and optimizer state value and per kept activation; the driver
    sizes a CPU pack by arithmetic, without importing torch (~1.5 s of its start-up, before any worker has a task)."""
    from suite.components.models import parameter_count
    from suite.execute import pack_size

    for optimizer, states in (("adam", 2), ("momentum", 1), ("sgd", 0)):
        cfg = config(True, optimizer={"name": optimizer})
        need = 4 * ((2 + states) * parameter_count(cfg.model, (1, 28, 28), 10) + 3 * 20 * (32 + 16))
        assert pack_size(cfg, 20, 7 * need) == 7 and pack_size(cfg, 20, 7 * need - 1) == 6 and pack_size(cfg, 20, 0) == 1
    probe = ("import sys; from suite.execute import Settings; from suite.execute.plan import units; "
             "from suite.spec.config import Execution, RunConfig; from suite.spec.study import RunSpec, run_key, with_execution; "
             "cfgs = [with_execution(RunConfig(model={'name': 'mlp', 'hidden': [64]}, optimizer={'name': 'adam', 'lr': 10.0 ** -i}), "
             "Execution(packed=True)) for i in range(4)]; "
             "got = units([(i, RunSpec('s', f'v{i}', 'mnist', i, {}, c, run_key(c, i))) for i, c in enumerate(cfgs)], "
             "Settings(workers=1), ['mnist']); print(sorted(len(u) for u in got), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["[4]", "False"], out.stderr


@needs_mnist
def test_a_pack_whose_worker_is_killed_fails_every_member(data_dir):
    tasks = members(data_dir, packed=True)[:2]
    done = {}

    def handle(task, kind, payload):
        if kind == "started":
            os.kill(payload["pid"], signal.SIGKILL)
        if kind == "done":
            done[task.id] = payload
        return False

    pending = iter([Pack(50, "pack", tuple(tasks))])
    LocalPool(1, 1).run(lambda: next(pending, None), unpacking(handle))
    assert sorted(done) == [0, 1]
    assert all(r.status == "failed" and "died (killed by signal 9)" in r.reason for r in done.values())


PACK_STUDY = """
name: packs
question: Do seeds and weight decay pack?
datasets: [mnist]
seeds: 3
metric: test_acc
baseline: none
base:
  data: {train_size: 300, val_size: 100, test_size: 200}
  model: {name: mlp, hidden: [32]}
  optimizer: {name: adam, lr: 0.001}
  train: {batch_size: 50, epochs: 1}
variants:
  none: {}
  wd: {optimizer: {weight_decay: 0.01}}
  cnn: {model: {name: cnn, channels: [4]}}
"""


@needs_mnist
@pytest.mark.slow
def test_suite_study_pack_records_each_member_and_says_so(tmp_path, data_dir):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "packs.yaml").write_text(PACK_STUDY)
    uri = store_at(tmp_path / "mlflow.db")
    common = ["--studies-dir", str(tmp_path / "studies"), "--tracking-uri", uri, "--reports-dir", str(tmp_path / "reports"),
              "--storage", f"sqlite:///{tmp_path}/optuna.db", "--data-dir", str(data_dir)]
    out = subprocess.run([sys.executable, "-m", "suite", "study", "packs", "--pack", "--pack-size", "3", "--workers", "2", *common],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("packs")
    found = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("suite.kind") == "run"]
    assert len(found) == 9 and all(r.info.status == "FINISHED" for r in found)
    by_variant = {}
    for r in found:
        by_variant.setdefault(r.data.tags["suite.variant"], []).append(r)
    # the six MLP runs went as packs of three (one per worker), the CNN runs alone and unpacked
    assert {r.data.params["execution.packed"] for r in by_variant["none"] + by_variant["wd"]} == {"True"}
    assert {r.data.tags["suite.pack_size"] for r in by_variant["none"] + by_variant["wd"]} == {"3"}
    assert {r.data.params["execution.packed"] for r in by_variant["cnn"]} == {"False"}
    assert len({r.data.tags["suite.pid"] for r in by_variant["none"] + by_variant["wd"]}) == 2
    assert len({r.data.metrics["test_acc"] for r in found}) > 3  # each member its own numbers
    assert all("train_loss_step" in r.data.metrics and "val_acc" in r.data.metrics for r in found)
    report = (tmp_path / "reports" / "packs" / "report.md").read_text()
    assert "Packed: 6 of these runs" in report


def test_options_that_would_change_nothing_are_refused_in_one_line():
    """--pack-size where nothing packs, --ray-address without Ray: a user who passes them expects them to act."""
    from suite.errors import SuiteError
    from suite.execute import execution

    with pytest.raises(SuiteError, match="--pack-size sizes packed runs: drop it, or drop --no-pack"):
        Settings(pack=False, pack_size=4)
    with pytest.raises(SuiteError, match=r"--ray-address is for --executor ray \(this call's executor: local\)"):
        Settings(ray_address="auto")
    with pytest.raises(SuiteError, match="--workers 2: --executor serial trains one run at a time in this process"):
        Settings(executor="serial", workers=2)
    with pytest.raises(SuiteError, match="packing is off on a CPU by default: add --pack"):
        execution(Settings(device="cpu", pack_size=4))
    assert execution(Settings(device="cpu", pack=True, pack_size=4)).packed
