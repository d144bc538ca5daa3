"""What a study can say beyond the first version, each field checked where it takes effect (the
optimizer's arguments, the learning rate at each step, the labels the loop trains on), in the
plain loop and packed; grid ranges; `suite list` with broken files; and the key rule: every field
added later, set explicitly to its legacy value, leaves every catalogue run key unchanged."""

import copy
import math
import subprocess
import sys
import typing

import pytest
import torch

from suite.spec import config as cfg
from suite import components, provenance
from suite.components import models
from suite.spec.config import LEGACY, RunConfig
from suite.execute.worker import Pack, Task, execute
from suite.spec.grid import grid_range
from suite.spec.study import commands, expand, make_command, list_studies, load_study, run_key, with_execution
from suite.execute.train import lr_factor, make_optimizer, noisy_labels

from conftest import ROOT, needs_mnist

NON_DEFAULT = {"lr": 0.123, "weight_decay": 0.0321, "momentum": 0.55, "dampening": 0.1, "nesterov": False, "alpha": 0.77,
               "eps": 1e-5, "centered": True, "betas": (0.8, 0.99), "amsgrad": True, "lr_decay": 0.01,
               "initial_accumulator_value": 0.1, "momentum_decay": 0.005, "decoupled_weight_decay": True, "rho": 0.8}


def optimizer_classes():
    return [c.params for c in components.records("optimizer")]


@pytest.mark.parametrize("model", optimizer_classes(), ids=lambda m: m.__name__)
def test_every_optimizer_argument_reaches_the_torch_optimizer(model):
    fields = [f for f in model.model_fields if f != "name"]
    name = typing.get_args(model.model_fields["name"].annotation)[0]
    chosen = model(name=name, **{f: NON_DEFAULT[f] for f in fields})
    group = make_optimizer(chosen, [torch.nn.Parameter(torch.zeros(3))]).param_groups[0]
    for field in fields:
        assert group[field] == NON_DEFAULT[field], field


def test_schedules_give_the_factor_of_the_base_rate_at_each_step():
    total, per_epoch = 100, 10
    factor = lambda **s: [lr_factor(cfg.Schedule(**s), t, total, per_epoch) for t in range(total)]  # noqa: E731
    assert set(factor()) == {1.0}
    step = factor(name="step", step_every=2, gamma=0.5)
    assert step[0] == step[19] == 1.0 and step[20] == step[39] == 0.5 and step[99] == 0.5 ** 4
    cosine = factor(name="cosine", min_factor=0.1)
    assert cosine[0] == 1.0 and all(a > b for a, b in zip(cosine, cosine[1:])) and 0.1 < cosine[-1] < 0.101
    warm = factor(name="warmup_cosine", warmup=0.1)
    assert warm[:10] == pytest.approx([(t + 1) / 10 for t in range(10)]) and warm[10] == 1.0 and warm[-1] < 0.001
    cycle = factor(name="one_cycle", peak_at=0.3, start_factor=0.04)
    assert cycle[0] == pytest.approx(0.04) and cycle[30] == 1.0 and max(cycle) == 1.0 and cycle[-1] < 0.001
    assert all(a < b for a, b in zip(cycle[:30], cycle[1:31]))


def test_label_noise_is_nested_seeded_and_only_flips():
    y = torch.arange(20000) % 10
    low, high = noisy_labels(y, 0.2, 3, 10), noisy_labels(y, 0.4, 3, 10)
    flipped_low, flipped_high = low != y, high != y
    assert abs(flipped_low.float().mean().item() - 0.2) < 0.01 and abs(flipped_high.float().mean().item() - 0.4) < 0.01
    assert bool((flipped_low <= flipped_high).all()) and torch.equal(low[flipped_low], high[flipped_low])
    assert torch.equal(noisy_labels(y, 0.2, 3, 10), low) and not torch.equal(noisy_labels(y, 0.2, 4, 10), low)
    assert noisy_labels(y, 0.0, 3, 10) is y


BASE = {"data": {"name": "mnist", "train_size": 400, "val_size": 200, "test_size": 300},
        "model": {"name": "mlp", "hidden": [32]}, "optimizer": {"name": "adam", "lr": 1e-3},
        "train": {"batch_size": 4, "epochs": 2}}


def task(i: int, packed: bool, seed: int = 0, **changes) -> Task:
    tree = copy.deepcopy(BASE)
    for section, values in changes.items():
        tree[section].update(values)
    return Task(i, f"t{i}", with_execution(RunConfig(**tree), cfg.Execution(packed=packed)), seed, "")


def run(t: Task, data_dir):
    t = Task(t.id, t.name, t.config, t.seed, str(data_dir))
    return execute(t, lambda kind, payload: None)


@needs_mnist
def test_a_step_schedule_stops_learning_after_its_decay(data_dir):
    frozen = {"schedule": {"name": "step", "step_every": 1, "gamma": 1e-9}}
    for packed in (False, True):
        record = run(task(0, packed, train=frozen), data_dir)
        first, second = record.history
        assert first["val_loss"] == pytest.approx(second["val_loss"], rel=1e-6), packed
        assert run(task(0, packed), data_dir).history[1]["val_loss"] != pytest.approx(first["val_loss"], rel=1e-3)


SGD_DECAY = {"name": "sgd", "lr": 0.05, "weight_decay": 0.5}


@needs_mnist
@pytest.mark.parametrize("changes", [
    {"train": {"label_smoothing": 0.2}},
    {"train": {"clip_norm": 0.05}},
    {"data": {"label_noise": 0.4}},
    {"train": {"schedule": {"name": "warmup_cosine", "warmup": 0.2}}},
    {"model": {"activation": "gelu"}},
    {"model": {"init": "orthogonal"}},
    {"train": {"decay": "weights"}, "optimizer": SGD_DECAY},
], ids=["label_smoothing", "clip_norm", "label_noise", "warmup_cosine", "gelu", "orthogonal", "decay_weights"])
def test_each_field_changes_training_and_packs_like_the_plain_loop(data_dir, changes):
    plain = run(task(0, False, seed=1, **({"optimizer": SGD_DECAY} if "decay" in changes.get("train", {}) else {})), data_dir)
    changed = run(task(0, False, seed=1, **changes), data_dir)
    assert changed.final["test_loss"] != plain.final["test_loss"]
    # packed beside a member without the change (label smoothing and noise vary per member; the rest per pack)
    per_member = any(f"{section}.{key}" in cfg.PER_MEMBER for section, values in changes.items() for key in values
                     if section != "optimizer")
    partner = task(1, True, seed=2) if per_member else task(1, True, seed=2, **changes)
    pack = execute(Pack(9, "p", (Task(0, "a", task(0, True, seed=1, **changes).config, 1, str(data_dir)),
                                 Task(1, "b", partner.config, 2, str(data_dir)))), lambda kind, payload: None)
    member = pack.members[0]
    assert member.status == "finished", member.reason
    assert len(changed.steps) == len(member.steps) > 1
    for (_, a), (_, p) in zip(changed.steps, member.steps):
        assert math.isclose(a, p, rel_tol=1e-4), (a, p)
    assert math.isclose(changed.final["test_loss"], member.final["test_loss"], rel_tol=1e-3)


@pytest.mark.parametrize("scheme", ["kaiming", "xavier", "orthogonal"])
def test_init_schemes_draw_from_the_generator(scheme):
    mlp = cfg.MLP(name="mlp", hidden=[32], init=scheme)
    a, b = (models.build_model(mlp, (1, 28, 28), 10, torch.Generator().manual_seed(s)) for s in (0, 0))
    default = models.build_model(cfg.MLP(name="mlp", hidden=[32]), (1, 28, 28), 10, torch.Generator().manual_seed(0))
    first = a[1].weight
    assert torch.equal(first, b[1].weight) and not torch.equal(first, default[1].weight) and not a[1].bias.any()
    if scheme == "orthogonal":
        assert torch.allclose(first @ first.T, torch.eye(32), atol=1e-4)
    if scheme == "xavier":
        assert first.abs().max() <= math.sqrt(6 / (784 + 32))


@needs_mnist
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_norm_layers_are_built_counted_and_trained_unpacked(data_dir, norm):
    from suite.spec.checks import model_size

    for model in ({"name": "mlp", "hidden": [32, 16], "norm": norm}, {"name": "cnn", "channels": [4], "hidden": [8], "norm": norm}):
        config = RunConfig(**{**BASE, "model": model})
        built = models.build_model(config.model, (1, 28, 28), 10, torch.Generator())
        kinds = {type(m).__name__ for m in built.modules()} & {"BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm"}
        # batch: BatchNorm; layer: LayerNorm after a linear layer, GroupNorm(1, C) (over C x H x W) after a convolution
        assert kinds == {("mlp", "batch"): {"BatchNorm1d"}, ("mlp", "layer"): {"LayerNorm"},
                         ("cnn", "batch"): {"BatchNorm2d", "BatchNorm1d"}, ("cnn", "layer"): {"GroupNorm", "LayerNorm"}}[model["name"], norm]
        if model["name"] == "cnn" and norm == "layer":
            assert all(m.num_groups == 1 for m in built.modules() if isinstance(m, torch.nn.GroupNorm))
        assert model_size(config)[0] == models.parameter_count(config.model, (1, 28, 28), 10)
    normed = task(0, True, model={"norm": norm})
    assert not normed.config.execution.packed  # --pack leaves it to the plain loop
    record, plain = run(normed, data_dir), run(task(0, False), data_dir)
    assert record.status == "finished" and record.final["test_loss"] != plain.final["test_loss"]


def test_decay_weights_leaves_biases_and_norms_undecayed():
    from suite.execute.train import parameter_groups

    model = models.build_model(cfg.MLP(name="mlp", hidden=[8], norm="layer"), (1, 4, 4), 3, torch.Generator())
    groups = make_optimizer(cfg.SGD(name="sgd", lr=0.1, weight_decay=0.3), parameter_groups(model, "weights")).param_groups
    assert [g["weight_decay"] for g in groups] == [0.3, 0.0]
    assert all(p.dim() == 2 for p in groups[0]["params"]) and all(p.dim() == 1 for p in groups[1]["params"])
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))


def test_activations_in_config_are_the_modules():
    assert set(typing.get_args(cfg.Activation)) == set(models.ACTIVATIONS)


def test_grid_ranges_expand_and_bad_ones_are_refused(tmp_path):
    assert grid_range({"log_range": [1e-4, 1e-1], "num": 4}) == [0.0001, 0.001, 0.01, 0.1]
    assert grid_range({"range": [0, 40], "num": 3}) == [0, 20, 40]
    assert grid_range({"range": [0, 1], "num": 3}) == [0.0, 0.5, 1.0]
    study = tmp_path / "r.yaml"
    for grid, message in [("{log_range: [0, 1], num: 3}", "log_range: both ends above 0"),
                          ("{range: [0, 1], num: 1}", "num: a whole number of values from 2 to 1000"),
                          ("{range: [0, 1]}", "write a range as"),
                          ("{log_range: [1e-4, x], num: 3}", "log_range: two finite numbers")]:
        study.write_text(f"name: r\nquestion: q\nbase: {{model: {{name: mlp}}, optimizer: {{name: adam, lr: 0.1}}}}\n"
                         f"grid:\n  optimizer.lr: {grid}\n")
        out = subprocess.run([sys.executable, "-m", "suite", "validate", str(study)], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert f"grid.optimizer.lr: {message}" in out.stderr, out.stderr  # (was "grid: optimizer.lr: ...")
    study.write_text("name: r\nquestion: q\nbase: {model: {name: mlp}, optimizer: {name: adam, lr: 0.1}}\n"
                     "grid:\n  optimizer.lr: {log_range: [1e-3, 1e-1], num: 3}\n  train.epochs: {range: [1, 3], num: 3}\n")
    loaded = load_study(str(study))
    assert len(loaded.variants) == 9 and loaded.variants[0] == "lr=0.001,epochs=1"


def test_list_names_every_invalid_file_and_still_lists_the_rest(tmp_path):
    for name in ("good", "bad1", "bad2"):
        text = "name: good\nquestion: fine?\n" if name == "good" else f"name: {name}\nquestion: q\nseeds: -1\n"
        (tmp_path / f"{name}.yaml").write_text(text)
    out = subprocess.run([sys.executable, "-m", "suite", "list", "--studies-dir", str(tmp_path)], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "good" in out.stdout and "fine?" in out.stdout
    invalid = [line for line in out.stderr.splitlines() if line.startswith("invalid:")]
    assert len(invalid) == 2 and "bad1.yaml" in invalid[0] and "bad2.yaml" in invalid[1]
    assert "2 of 3 study files are invalid" in out.stderr


def test_files_outside_studies_are_reproduced_by_path_and_runs_outside_git_say_so(tmp_path):
    (tmp_path / "mine.yaml").write_text("name: mine\nquestion: q\n")
    assert commands(load_study(str(tmp_path / "mine.yaml")), False)[0] == f"make study STUDY={tmp_path / 'mine.yaml'}"
    assert commands(load_study("regularization"), False)[0] == "make study STUDY=regularization"
    # every command a smoke report prints carries the smoke flag (a search report said `make tune STUDY=x TRIALS=n`,
    # which continues the full search, not the smoke one)
    assert commands(load_study("regularization"), True, "--force") == ('make study STUDY=regularization ARGS="--smoke --force"',
                                                                      'make report STUDY=regularization ARGS="--smoke --force"')
    assert make_command("tune", load_study("regularization"), True, variables="TRIALS=n") == \
        "make tune STUDY=regularization TRIALS=n ARGS=--smoke"
    assert make_command("tune", load_study("regularization"), False, variables="TRIALS=n") == "make tune STUDY=regularization TRIALS=n"
    assert provenance.git_commit(tmp_path) == provenance.NO_GIT


# Every field added to the run config after the first reports were committed, at its legacy value.
ADDED = {
    "data": {"label_noise": 0.0, "train_fraction": None},
    "model": {"norm": "none", "init": "default"},
    "optimizer": {"dampening": 0.0, "centered": False, "amsgrad": False},
    "train": {"label_smoothing": 0.0, "clip_norm": None, "decay": "all",
              "schedule": {"name": "constant", "step_every": 1, "gamma": 0.1, "warmup": 0.05, "peak_at": 0.3,
                           "start_factor": 0.04, "min_factor": 0.0}},
}


def test_fields_written_at_their_legacy_values_leave_every_catalogue_key_unchanged(tmp_path):
    """The key rule: a field enters a run's key only away from its frozen legacy value (config.LEGACY).

    Every catalogue study is rewritten with every later field spelled out at its legacy value in
    `base` (variants that set a field still override it); its run keys must not move.
    """
    import yaml

    for section, fields in ADDED.items():  # frozen here: a later edit of config.LEGACY cannot move them
        for field, value in fields.items():
            assert LEGACY[section][field] == value, f"{section}.{field}"
    checked = 0
    for path in list_studies():
        tree = yaml.safe_load(path.read_text())
        base = tree.setdefault("base", {})
        for section, fields in ADDED.items():
            if section == "optimizer":  # only the arguments of the base's optimizer, where no variant switches it
                name = base.get("optimizer", {}).get("name")
                switched = "optimizer.name" in tree.get("grid", {}) or any(
                    "name" in (v or {}).get("optimizer", {}) for v in (tree.get("variants") or {}).values())
                model = {m.model_fields["name"].annotation.__args__[0]: m for m in optimizer_classes()}.get(name)
                fields = {} if switched or model is None else {k: v for k, v in fields.items() if k in model.model_fields}
            if section == "model" and base.get("model", {}).get("name") not in ("mlp", "cnn"):
                continue
            target = base.setdefault(section, {})
            for field, value in fields.items():
                target.setdefault(field, copy.deepcopy(value))
        rewritten = tmp_path / path.name
        rewritten.write_text(yaml.safe_dump(tree, sort_keys=False))
        before = [s.run_key for s in expand(load_study(str(path)))]
        after = [s.run_key for s in expand(load_study(str(rewritten)))]
        assert after == before, path.stem
        checked += len(after)
    assert checked > 300


SLICED = """
name: sliced
question: Which regulariser holds up under label noise?
datasets: [mnist]
seeds: 4
baseline: none
base: {model: {name: mlp, hidden: [8]}, optimizer: {name: adam, lr: 0.01}}
variants:
  none: {}
  l2: {optimizer: {weight_decay: 0.001}}
grid:
  data.label_noise: [0.0, 0.4]
"""


def test_a_baseline_crossed_with_a_grid_is_compared_within_each_slice(tmp_path):
    import pandas as pd

    from suite import analysis

    (tmp_path / "sliced.yaml").write_text(SLICED)
    study = load_study(str(tmp_path / "sliced.yaml"))
    assert study.baselines == {"none,label_noise=0": "none,label_noise=0", "none,label_noise=0.4": "none,label_noise=0.4",
                               "l2,label_noise=0": "none,label_noise=0", "l2,label_noise=0.4": "none,label_noise=0.4"}
    # clean runs score ~0.9, noisy ~0.6; l2 adds +0.01 (+-0.001) within each slice
    level = {"none,label_noise=0": 0.9, "l2,label_noise=0": 0.91, "none,label_noise=0.4": 0.6, "l2,label_noise=0.4": 0.61}
    rows = [{"dataset": "mnist", "variant": v, "seed": s, "test_acc": base + 0.001 * (s % 2)} for v, base in level.items() for s in range(4)]
    runs = pd.DataFrame(rows)
    table = analysis.family(runs, study).comparisons.set_index("variant")
    assert list(table.index) == ["l2,label_noise=0", "l2,label_noise=0.4"]
    assert table.loc["l2,label_noise=0.4", "baseline"] == "none,label_noise=0.4"
    assert table["mean_diff"].tolist() == pytest.approx([0.01, 0.01])  # against the whole-study baseline it would be -0.29


FAMILY = """
name: family
question: Do a and b beat the baseline?
datasets: [mnist]
seeds: 5
baseline: base
base: {model: {name: mlp, hidden: [8]}, optimizer: {name: adam, lr: 0.01}}
variants: {base: {}, a: {optimizer: {lr: 0.02}}, b: {optimizer: {lr: 0.03}}}
claims:
  - a > base by at least 0.5 points
  - b >= 90%
  - base > a
"""


def test_comparisons_and_claims_are_one_holm_family(tmp_path):
    """Two comparisons and two one-sided claims: four tests, adjusted together; intervals at each test's level."""
    import pandas as pd
    from scipy import stats as sps

    from suite import analysis
    from suite.analysis import stats

    (tmp_path / "family.yaml").write_text(FAMILY)
    study = load_study(str(tmp_path / "family.yaml"))
    base = [0.900, 0.905, 0.898, 0.903, 0.901]
    a = [x + d for x, d in zip(base, [0.009, 0.011, 0.010, 0.012, 0.008])]  # +1.0 pp, a claim margin of 0.5 pp
    b = [0.902, 0.899, 0.904, 0.897, 0.903]  # about 90.1%: "b >= 90%" cannot be shown
    runs = pd.DataFrame([{"dataset": "mnist", "variant": v, "seed": s, "test_acc": x}
                         for v, xs in (("base", base), ("a", a), ("b", b)) for s, x in enumerate(xs)])
    tests = analysis.family(runs, study)
    comparisons, claims = tests.comparisons.set_index("variant"), tests.claims.set_index("claim")
    raw = [sps.ttest_rel(a, base).pvalue, sps.ttest_rel(b, base).pvalue,
           sps.ttest_1samp([x - y for x, y in zip(a, base)], 0.005, alternative="greater").pvalue,
           sps.ttest_1samp(b, 0.90, alternative="greater").pvalue,
           sps.ttest_1samp([y - x for x, y in zip(a, base)], 0.0, alternative="greater").pvalue]
    assert [comparisons.loc["a", "p_t"], comparisons.loc["b", "p_t"], *claims["p"]] == pytest.approx(raw)
    adjusted = stats.holm(raw)  # m = 4: the claims count in the comparisons' adjustment
    assert [*comparisons["p_holm"], *claims["p_holm"]] == pytest.approx(adjusted)
    assert adjusted[0] > raw[0] * 2  # more than the two comparisons alone would have charged
    levels = stats.holm_levels(raw)
    assert comparisons.loc["a", "confidence"] == pytest.approx(1 - levels[0])
    half = sps.t.isf(levels[0] / 2, 4) * pd.Series([x - y for x, y in zip(a, base)]).std() / 5 ** 0.5
    assert comparisons.loc["a", "ci_high"] - comparisons.loc["a", "ci_low"] == pytest.approx(2 * half)
    assert comparisons.loc["a", "verdict"] == "better"
    margin = claims.loc["a > base by at least 0.5 points"]
    assert margin["verdict"] == ("supported" if margin["p_holm"] < 0.05 else "inconclusive") == "supported"
    assert margin["ci_low"] > 0.005  # its one-sided bound at the adjusted level clears the margin
    threshold = claims.loc["b >= 90%"]
    assert threshold["verdict"] == "inconclusive" and threshold["p_holm"] >= 0.05
    dz = (pd.Series(b).mean() - 0.90) / pd.Series(b).std()
    assert threshold["seeds_needed"] == stats.seeds_for_power(dz, alpha=levels[3], sides=1) > 5
    # contradicted: the opposite one-sided test ("base < a"), Holm-adjusted in the claim's place, below 0.05
    wrong = claims.loc["base > a"]
    opposite = sps.ttest_1samp([y - x for x, y in zip(a, base)], 0.0, alternative="less").pvalue
    swapped = [*raw[:4], opposite]
    assert wrong["verdict"] == "contradicted" and stats.holm(swapped)[4] < 0.05 <= wrong["p_holm"]
    assert wrong["ci_high"] < 0  # its upper bound, at the opposite test's level, lies on the wrong side
    assert wrong["confidence"] == pytest.approx(1 - stats.holm_levels(swapped)[4])


def test_a_weak_contradiction_among_many_tests_stays_inconclusive(tmp_path):
    """The opposite test is Holm-adjusted too: p' = 0.02 alone would contradict, among eleven tests it does not."""
    import pandas as pd

    from suite import analysis

    variants = "".join(f"  v{i}: {{optimizer: {{lr: 0.1{i}}}}}\n" for i in range(10))
    (tmp_path / "many.yaml").write_text(FAMILY.replace("name: family", "name: many").replace(
        "variants: {base: {}, a: {optimizer: {lr: 0.02}}, b: {optimizer: {lr: 0.03}}}", "variants:\n  base: {}\n" + variants)
        .split("claims:")[0] + "claims: [v0 > base]\n")
    study = load_study(str(tmp_path / "many.yaml"))
    base = [0.900, 0.905, 0.898, 0.903, 0.901]
    rows = [{"dataset": "mnist", "variant": "base", "seed": s, "test_acc": x} for s, x in enumerate(base)]
    v0 = [x + d for x, d in zip(base, [-0.002, -0.003, -0.001, -0.004, 0.000])]  # a little below base: p' about 0.02
    rows += [{"dataset": "mnist", "variant": "v0", "seed": s, "test_acc": x} for s, x in enumerate(v0)]
    rows += [{"dataset": "mnist", "variant": f"v{i}", "seed": s, "test_acc": x + 0.001 * ((s * i) % 3 - 1)}
             for i in range(1, 10) for s, x in enumerate(base)]
    tests = analysis.family(pd.DataFrame(rows), study)
    claim = tests.claims.iloc[0]
    assert 0.005 < 1 - claim["p"] < 0.05  # the opposite test alone would reject ...
    assert claim["verdict"] == "inconclusive"  # ... but not Holm-adjusted among 10 comparisons and the claim


@needs_mnist
@pytest.mark.parametrize("depth, norm", [(8, "batch"), (14, "layer"), (20, "none")])
def test_the_cifar_resnet_has_its_paper_size_and_trains(data_dir, depth, norm):
    from suite.spec.checks import model_size

    config = RunConfig(**{**BASE, "model": {"name": "resnet", "depth": depth, "width": 4, "norm": norm},
                          "train": {"batch_size": 50, "epochs": 1}})
    assert model_size(config)[0] == models.parameter_count(config.model, (1, 28, 28), 10)
    built = models.build_model(config.model, (1, 28, 28), 10, torch.Generator())
    assert sum(isinstance(m, models.Block) for m in built.modules()) == 3 * (depth - 2) // 6
    record = run(Task(0, "r", with_execution(config, cfg.Execution(packed=True)), 0, ""), data_dir)
    assert record.status == "finished" and record.final["parameters"] == model_size(config)[0]
    assert not record.where.get("packed") and not with_execution(config, cfg.Execution(packed=True)).execution.packed
    paper = RunConfig(data={"name": "cifar10"}, model={"name": "resnet", "depth": 20})
    assert 0.26e6 < model_size(paper)[0] < 0.28e6  # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters


def test_warmup_never_overshoots_the_base_rate():
    for warmup, total in ((0.05, 50), (0.07, 100), (0.001, 100)):
        factors = [lr_factor(cfg.Schedule(name="warmup_cosine", warmup=warmup), t, total, 10) for t in range(total)]
        assert max(factors) == 1.0, (warmup, total)


@needs_mnist
def test_batch_norm_trains_when_the_last_batch_holds_one_example(data_dir):
    record = run(task(0, False, model={"norm": "batch"}, train={"batch_size": 399, "epochs": 1}), data_dir)  # 400 = 399 + 1
    assert record.status == "finished", record.reason


def test_a_search_resolves_packing_per_trial(tmp_path):
    """A trial whose sampled values make it unpackable (batch norm) trains unpacked even when the search packs."""
    from suite.execute.packed import train_packed
    from suite.tune import override

    base = RunConfig(**BASE)
    trial = with_execution(override(base, {"model.norm": "batch"}), cfg.Execution(packed=True))
    assert not trial.execution.packed
    with pytest.raises(ValueError, match="cannot share this pack"):
        train_packed([trial], [0], None, torch.device("cpu"))


@needs_mnist
def test_train_fraction_keeps_the_first_share_of_the_training_images(data_dir):
    """data.train_fraction reaches the splits the loop trains on: nested subsets; validation and test untouched."""
    from suite.components.data import load_splits

    def splits(**fraction):
        return load_splits(cfg.DataConfig(name="mnist", val_size=100, train_size=1000, test_size=200, **fraction), data_dir,
                           torch.device("cpu"))

    whole, half, tenth = splits(), splits(train_fraction=0.5), splits(train_fraction=0.1)
    assert (len(whole.train_y), len(half.train_y), len(tenth.train_y)) == (1000, 500, 100)
    assert torch.equal(half.train_x, whole.train_x[:500]) and torch.equal(tenth.train_x, half.train_x[:100])
    assert torch.equal(half.val_x, whole.val_x) and torch.equal(half.test_x, whole.test_x)
    base = RunConfig(data={"name": "mnist", "train_size": 1000})
    assert run_key(base, 0) == run_key(RunConfig(data={"name": "mnist", "train_size": 1000, "train_fraction": None}), 0)
    assert run_key(base, 0) != run_key(RunConfig(data={"name": "mnist", "train_size": 1000, "train_fraction": 0.5}), 0)


def test_the_committed_study_reference_is_what_suite_schema_prints():
    """docs/study-reference.md cannot drift from the schema: regenerate it with `.venv/bin/suite schema > docs/study-reference.md`."""
    from suite.spec.schema import reference

    text = reference()
    assert (ROOT / "docs" / "study-reference.md").read_text(encoding="utf-8") == text
    for kind in components.KINDS:  # every built-in component is listed
        assert all(f"| {kind} | `{c.name}` |" in text for c in components.records(kind))
