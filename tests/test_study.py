"""Study files: parsing, the one-line errors, expansion counts and run-key stability."""

import subprocess
import sys

import pytest

from suite.errors import StudyError
from suite.spec.config import RunConfig
from suite.spec.grid import deep_merge
from suite.spec.study import expand, list_studies, load_study, run_key

BASE = """
name: t
question: q?
base:
  model: {name: mlp, hidden: [10]}
  optimizer: {name: adam, lr: 0.01}
variants:
  a: {}
  b: {optimizer: {weight_decay: 0.1}}
"""


def write(tmp_path, extra: str = "", base: str = BASE):
    path = tmp_path / "t.yaml"
    path.write_text(base + extra + "\n")
    return path


def error_of(path) -> str:
    with pytest.raises(StudyError) as err:
        load_study(str(path))
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


@pytest.mark.parametrize("extra, expected", [
    ("  c: {model: {dropout: 1.5}}", "variants.c.model.dropout: Input should be less than 1 (got 1.5)"),
    ("  c: {model: {dropuot: 0.5}}", "variants.c.model.dropuot: unknown key 'dropuot' (allowed: name, hidden, activation, dropout, dropout_layers, norm, init)"),
    ("  c: {optimizer: {name: adamx}}", "variants.c.optimizer.name: unknown or missing name 'adamx' (allowed: sgd, momentum, rmsprop, adam, adamw, adagrad, nadam, radam, adadelta)"),
    ("  c: {optimizer: {lr: -1}}", "variants.c.optimizer.lr: Input should be greater than 0 (got -1)"),
    ("  c: {model: {name: resnett}}", "variants.c.model.name: unknown or missing name 'resnett' (allowed: mlp, cnn, resnet)"),
    ("seedz: 3", "seedz: unknown key 'seedz' (allowed: name, question,"),
    ("datasets: [mnistt]", "datasets: unknown dataset 'mnistt' (allowed: mnist, fashion_mnist, cifar10, quadratic)"),
    ("grid: {model.dropout: [0, 1.2]}", "grid.model.dropout: Input should be less than 1 (got 1.2)"),
    ("grid: {optimizer.lr: [0.1, 0.10, 0.01]}", "grid.optimizer.lr: the value 0.1 appears twice; list each value once"),
    ("baseline: z", "baseline: 'z' is not a variant (variants: a, b)"),
    ("claims: ['a > c']", "claims: 'a > c': 'c' is not a variant"),
    ("claims: ['a > b on test_mse']", "claims: 'a > b on test_mse': 'test_mse' does not apply to mnist (classification)"),
    ("search: {objective: val_mse, space: {optimizer.lr: {type: float, low: 0.001, high: 0.1}}}",
     "search.objective: val_mse does not apply to mnist (classification); use val_acc or val_loss"),
    ("search: {seed: 99999999999999999, space: {optimizer.lr: {type: float, low: 0.001, high: 0.1}}}",
     "search.seed: Input should be less than or equal to 4294967295"),
    ("seeds: [0, 4294967296]", "seeds: a list of distinct integers from 0 to 4,294,967,295"),
    ("  b: {optimizer: {lr: 0.5}}", "not valid YAML at line 10: the key 'b' appears twice in one mapping"),  # (the last one won)
    ("  c: {optimizer.lr: 0.1}", "variants.c.optimizer.lr: a dotted key here is one unknown name; write it nested (optimizer: {lr: ...})"),
    ("datasets: {mnist: 3}", "datasets.mnist: a mapping of settings for mnist"),  # (was "datasets.list[str]: ...")
    ("grid: {model: [{name: mlp}, {name: cnn}]}", "grid.model: an axis lists values of one setting"),  # (named variants by mappings)
    ("grid: {optimizer.lr.foo: [1, 2]}", "grid.optimizer.lr.foo: Input should be a valid number"),  # (blamed base)
    # sizes beyond the dataset (it trained on fewer examples than its key said, or failed every run)
    ("  c: {data: {val_size: 60000}}", "variant 'c' on mnist: data.val_size 60,000 leaves no training data (mnist has 60,000 training examples)"),
    ("  c: {data: {train_size: 56000}}", "variant 'c' on mnist: data.train_size 56,000 is more than the 55,000 training examples mnist has"),
    ("claims: ['a is better']", "claims: cannot read 'a is better'"),
    # thresholds and margins no accuracy can reach: decided before anything trains
    ("claims: ['a >= 150%']", "claims: 'a >= 150%': test_acc lies between 0 and 1 (0-100%), so 1.5 decides this claim before anything trains"),
    ("claims: ['a >= 97.5 on val_acc']", "claims: 'a >= 97.5 on val_acc': val_acc lies between 0 and 1"),
    ("claims: ['b > a by at least 5']", "claims: 'b > a by at least 5': no two test_accs differ by more than 1 (100 points)"),
    ("metric: test_accuracy", "metric: unknown metric 'test_accuracy'"),
    ("seeds: 0", "seeds: give a positive count"),
    ("  c: {optimizer: {weight_decay: 0.1}}", "variants 'b' and 'c' resolve to the same config"),
    ("  c: [1", "not valid YAML at line"),
    # the base's hidden layers, merged into a variant that names another model (was blamed on base alone)
    ("  c: {model: {name: resnet, depth: 8}}", "base.model.hidden (merged into variants.c.model, name resnet): unknown key 'hidden'"),
    # a yes/no where a number goes (pydantic read true as 1: batches of one)
    ("  c: {train: {batch_size: true}}", "variants.c.train.batch_size: a number, not a yes/no (got true)"),
    ("  c: {model: {hidden: [true]}}", "variants.c.model.hidden.0: a number, not a yes/no (got true)"),
    ("seeds: true", "seeds: a number, not a yes/no (got true)"),
    # a grid over the dataset named its points while every run trained on the study's datasets
    ("grid: {data.name: [cifar10]}", "grid.data.name: set the datasets with the top-level key 'datasets'"),
    # no pydantic type labels in the key, and every type the value may take
    ("seeds: {a: 1}", "seeds: Input should be a valid integer or a valid list"),  # (was "seeds.int: ... integer")
    ("seeds: abc", "seeds: Input should be a valid integer or a valid list (got 'abc')"),  # (each member's first clause)
    ("seeds: [1, a]", "seeds.1: Input should be a valid integer, unable to parse string as an integer (got 'a')"),  # (was "seeds: ... (got [1, 'a'])")
    ("search: {space: {train.batch_size: {type: categorical, choices: [{a: 1}]}}}",
     "search.space.train.batch_size.choices.0: Input should be a valid boolean, a valid integer, a valid number or a valid string"),
    # what only a regression dataset refuses, located (was "(top level): ..."), and image settings on non-images (every run failed)
    ("  c: {train: {patience: 2}}\ndatasets: [quadratic]\nmetric: test_mse",  # (the monitor's default: not in the file)
     "variants.c.train.patience: early stopping watches train.monitor, val_acc (the default), which has no meaning for a regression "
     "dataset; set train.monitor: val_loss"),
    ("  c: {data: {label_noise: 0.1}}\ndatasets: [quadratic]\nmetric: test_mse",
     "variants.c.data.label_noise: needs class labels; quadratic is a regression dataset"),
    ("  c: {model: {name: cnn}}\ndatasets: [quadratic]\nmetric: test_mse",
     "variants.c.model.name: cnn needs image inputs (C x H x W); quadratic's are of shape 1"),
    ("  c: {data: {augment: {rotation: 10}}}\ndatasets: [quadratic]\nmetric: test_mse",
     "variants.c.data.augment.rotation: an image augmentation; quadratic's inputs are of shape 1"),
    # percent and points are an accuracy's units; a variant against itself decides nothing and tightens every other test
    ("claims: ['a < b by at least 5 points on test_loss']", "claims: 'a < b by at least 5 points on test_loss': points reads an "
                                                           "accuracy in percent, and test_loss is no accuracy"),
    ("claims: ['a <= 50% on epochs_trained']", "claims: 'a <= 50% on epochs_trained': % reads an accuracy in percent"),
    ("claims: ['b > b']", "claims: 'b > b': compares b with itself; name two variants"),
])
def test_bad_files_give_one_line_naming_the_key(tmp_path, extra, expected):
    assert expected in error_of(write(tmp_path, extra))


def test_base_errors_point_at_base(tmp_path):
    path = write(tmp_path, base=BASE.replace("lr: 0.01", "lr: 0.01, betas: [0.9, 1.5]"))
    assert "base.optimizer.betas.1: Input should be less than 1" in error_of(path)


def test_cli_validate_exit_code_2_and_no_traceback(tmp_path):
    path = write(tmp_path, "  c: {model: {dropout: 1.5}}")
    out = subprocess.run([sys.executable, "-m", "suite", "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "variants.c.model.dropout" in out.stderr


def test_study_loader_imports_no_torch(tmp_path):
    code = f"import sys; from suite.spec.study import load_study; load_study({str(write(tmp_path))!r}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_expansion_counts_and_order(tmp_path):
    study = load_study(str(write(tmp_path, "grid: {model.dropout: [0.0, 0.5], train.batch_size: [32, 64]}\nseeds: 3\ndatasets: [mnist, fashion_mnist]\n")))
    specs = expand(study)
    assert len(specs) == study.run_count == 2 * 2 * 2 * 2 * 3
    assert study.variants[:2] == ("a,dropout=0,batch_size=32", "a,dropout=0,batch_size=64")
    assert len({s.run_key for s in specs}) == len(specs)
    b = [s for s in specs if s.variant == "b,dropout=0.5,batch_size=64" and s.dataset == "fashion_mnist"]
    assert [s.seed for s in b] == [0, 1, 2]
    assert b[0].config.optimizer.weight_decay == 0.1 and b[0].config.model.dropout == 0.5 and b[0].config.train.batch_size == 64
    assert b[0].point == (("model.dropout", 0.5), ("train.batch_size", 64))


def test_run_key_is_stable_and_content_addressed(tmp_path):
    first = expand(load_study(str(write(tmp_path))))
    # the same content written differently (key order, explicit defaults) gives the same keys
    reordered = BASE.replace("{name: adam, lr: 0.01}", "{lr: 0.01, eps: 1.0e-8, name: adam}")
    second = expand(load_study(str(write(tmp_path, base=reordered))))
    assert [s.run_key for s in first] == [s.run_key for s in second]
    assert first[0].run_key != run_key(first[0].config, 99)
    # pinned on purpose, the key this config has had since run keys began (commit 35c17f6 gives it too): a change of
    # the hashing or of the canonical config (a new field entering keys at its legacy value) shows up here
    assert first[0].run_key == "f9a568da3016d024"


def test_smoke_shrinks_epochs_seeds_and_data(tmp_path):
    study = load_study(str(write(tmp_path, "seeds: 5\nsmoke: {seeds: 1, epochs: 1, train_size: 100, val_size: 50, test_size: 60}\n")))
    specs = expand(study, smoke=True)
    assert len(specs) == 2
    data = specs[0].config.data
    assert (data.train_size, data.val_size, data.test_size, specs[0].config.train.epochs) == (100, 50, 60, 1)
    assert {s.run_key for s in specs}.isdisjoint({s.run_key for s in expand(study)})


def test_deep_merge_recurses_and_replaces_lists():
    base = {"model": {"hidden": [1, 2], "dropout": 0.1}, "optimizer": {"lr": 1}}
    merged = deep_merge(base, {"model": {"hidden": [3]}})
    assert merged == {"model": {"hidden": [3], "dropout": 0.1}, "optimizer": {"lr": 1}}
    assert base["model"]["hidden"] == [1, 2]


def test_an_unnamed_model_or_optimizer_block_adjusts_the_default_one(tmp_path):
    """`optimizer: {lr: 0.1}` where nothing names an optimizer is the default Adam at 0.1 (it was refused for its
    missing name, while a file writing no optimizer at all trains the default); `mnist:` alone has no settings."""
    base = "name: t\nquestion: q?\ndatasets: {mnist: null}\nbase: {model: {hidden: [8]}}\n"
    study = load_study(str(write(tmp_path, "variants:\n  plain: {}\n  fast: {optimizer: {lr: 0.1}}\ngrid: {model.dropout: [0, 0.5]}\n", base)))
    plain, fast = study.configs["mnist", "plain,dropout=0"], study.configs["mnist", "fast,dropout=0.5"]
    assert (plain.optimizer.name, plain.optimizer.lr, fast.optimizer.name, fast.optimizer.lr) == ("adam", 1e-3, "adam", 0.1)
    assert plain.optimizer == RunConfig().optimizer and (plain.model.name, plain.model.hidden) == ("mlp", [8])
    assert fast.model.dropout == 0.5


def test_a_claim_names_a_variant_whose_name_reads_as_a_number(tmp_path):
    """`a > 0.5` with a variant named 0.5 compares the two variants (it became a threshold claim)."""
    study = load_study(str(write(tmp_path, "  '0.5': {optimizer: {lr: 0.1}}\nclaims: ['a > 0.5', 'a > 50%']\n")))
    (between, threshold) = study.claims
    assert (between.right, between.value) == ("0.5", 0.0) and (threshold.right, threshold.value) == (None, 0.5)


def test_claims_parse_margin_points_and_thresholds(tmp_path):
    study = load_study(str(write(tmp_path, "claims: ['b > a by at least 0.5 points on test_acc', 'a >= 97.5% on test_acc', 'a < b on test_loss']\n")))
    margin, threshold, loss = study.claims
    assert (margin.left, margin.op, margin.right, margin.value) == ("b", ">", "a", pytest.approx(0.005))
    assert (threshold.right, threshold.value, threshold.op) == (None, pytest.approx(0.975), ">=")
    assert loss.metric == "test_loss"
    tight = load_study(str(write(tmp_path, "claims: ['b>a by at least 0.5points on test_acc', 'a>=97.5points on test_acc', 'a<b on test_loss']\n")))
    assert [(c.left, c.op, c.right, c.value, c.metric) for c in tight.claims] == \
        [(c.left, c.op, c.right, c.value, c.metric) for c in study.claims], "blanks around the operator and before a unit are optional"
    named = load_study(str(write(tmp_path, "  '5points': {optimizer: {lr: 0.1}}\nclaims: ['a > 5points', 'a >= 5 points']\n")))
    assert [(c.right, c.value) for c in named.claims] == [("5points", 0.0), (None, pytest.approx(0.05))], "a variant keeps its name"


def test_the_readme_claim_examples_parse(tmp_path):
    """Every line of the README's `claims:` example block is a claim the grammar reads, with the meaning its comment gives."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\nclaims:\n(.*?)```", readme, re.S).group(1)
    texts = [line.split("#")[0].strip().removeprefix("- ").strip() for line in block.splitlines() if line.strip()]
    contexts = ["variants: {l2: {optimizer: {weight_decay: 0.1}}, none: {}, adam: {optimizer: {name: adam}}, sgd: {optimizer: {lr: 0.1}}, base: {optimizer: {lr: 0.2}}}",  # the examples come
                "grid: {model.dropout: [0, 0.1]}",                                                  # from three kinds of
                "variants: {none: {}, dropout: {model: {dropout: 0.5}}}\ngrid: {data.label_noise: [0, 0.4]}"]  # study
    claims = {}
    for text in texts:
        for i, context in enumerate(contexts):
            path = tmp_path / f"examples{i}.yaml"
            path.write_text("name: examples\nquestion: Do the README's claims read?\ndatasets: [mnist, cifar10]\n"
                            "base: {model: {name: mlp, hidden: [8]}, optimizer: {name: sgd, lr: 0.01}}\n"
                            f"{context}\nclaims: [{text!r}]\n")
            try:
                claims[text] = load_study(str(path)).claims[0]
                break
            except StudyError as err:
                assert "is not a variant" in str(err), err  # only the names may be foreign to a context
    assert sorted(claims) == sorted(texts) and len(texts) == 5
    margin = claims["dropout=0.1 > dropout=0 by at least 0.5 points on test_acc"]
    assert margin.value == pytest.approx(0.005) and margin.metric == "test_acc"
    assert claims["adam < sgd on test_loss in cifar10"].dataset == "cifar10"
    assert claims["base >= 97.5% on test_acc"].right is None and claims["base >= 97.5% on test_acc"].value == pytest.approx(0.975)


def test_every_shipped_study_validates():
    from suite.spec.study import list_studies

    paths = list_studies()
    assert paths, "no studies shipped"
    for path in paths:
        study = load_study(str(path))
        assert study.run_count == len(expand(study)) > 0


def test_datasets_may_carry_their_own_overrides(tmp_path):
    extra = "datasets:\n  mnist: {}\n  cifar10: {model: {hidden: [1000, 500]}}\n"
    study = load_study(str(write(tmp_path, extra)))
    assert study.configs["mnist", "a"].model.hidden == [10]
    assert study.configs["cifar10", "b"].model.hidden == [1000, 500] and study.configs["cifar10", "b"].optimizer.weight_decay == 0.1
    bad = write(tmp_path, "datasets:\n  cifar10: {model: {hidden: [0]}}\n")
    assert "datasets.cifar10.model.hidden.0: Input should be greater than 0" in error_of(bad)


@pytest.mark.parametrize("space, expected", [
    ("optimizer.lrr: {type: float, low: 0.001, high: 0.1}", "search.space.optimizer.lrr: unknown key 'lrr'"),
    ("optimizer.lr: {type: float, low: 0, high: 0.1, log: true}", "search.space.optimizer.lr: a log-scaled range needs low > 0"),
    ("optimizer.lr: {type: float, low: 0.1, high: 0.01}", "takes 'low' < 'high'"),
    ("model.dropout: {type: float, low: 0.1, high: 1.0}", "search.space.model.dropout: Input should be less than 1 (got 1.0)"),
    ("model.hidden: {type: categorical, choices: [[16], [32]]}", "search.space.model.hidden.choices.0"),
    # a float range over a whole-number field, whose corners alone would pass
    ("train.epochs: {type: float, low: 1, high: 3}",
     "search.space.train.epochs: train.epochs takes whole numbers, but a float range samples fractions (such as 2.5); use type: int"),
    ("train.batch_size: {type: float, low: 16, high: 128, log: true}", "search.space.train.batch_size: train.batch_size takes whole numbers"),
    ("optimizer.lr: {type: int, low: 0.5, high: 2}", "search.space.optimizer.lr: an int parameter takes whole-number 'low' and 'high'"),
    ("train.batch_size: {type: categorical, choices: [32, '64']}", "search.space.train.batch_size: the choice '64' would train as 64; write 64"),
    ("train.epochs: {type: categorical, choices: [1, true]}", "search.space.train.epochs: the choice True would train as 1; write 1"),
    ("optimizer.lr: {type: categorical, choices: [1e-3, 0.01]}", "search.space.optimizer.lr: the choice '1e-3' would train as 0.001"),
    ("train.epochs: {type: categorical, choices: [1, big]}", "search.space.train.epochs: Input should be a valid integer"),
    # switching the model under the base's MLP settings (it named dropout_layers, a key no one wrote, as unknown)
    ("model.name: {type: categorical, choices: [mlp, cnn]}", "search.space.model.name: the choice 'cnn' does not take the settings of "
     "this variant's 'mlp' (dropout_layers); a search cannot switch between models with settings of their own: make each one a variant"),
    ("model.name: {type: categorical, choices: [mlp, nope]}", "search.space.model.name: unknown or missing name 'nope'"),
    ("execution.threads: {type: int, low: 1, high: 2}", "search.space.execution.threads: how runs are computed is chosen when running"),
    ("data.name: {type: categorical, choices: [mnist, cifar10]}", "search.space.data.name: the datasets are the study's `datasets:`"),
    ("data.train_size: {type: int, low: 1000, high: 60000}", "search.space.data.train_size = 60000 on mnist: data.train_size 60,000 is more than"),
])
def test_bad_search_spaces_are_one_line(tmp_path, space, expected):
    assert expected in error_of(write(tmp_path, f"search:\n  space:\n    {space}\n"))
    assert expected.replace("search.", "tune.", 1) in error_of(write(tmp_path, f"tune:\n  space:\n    {space}\n"))


@pytest.mark.parametrize("space", [
    "train.epochs: {type: int, low: 1, high: 3}",
    "optimizer.lr: {type: int, low: 1, high: 2}",  # whole numbers are floats too
    "optimizer.lr: {type: float, low: 1, high: 3}",
    "train.batch_size: {type: categorical, choices: [32, full]}",
])
def test_search_spaces_whose_every_point_is_a_config_load(tmp_path, space):
    assert load_study(str(write(tmp_path, f"search:\n  space:\n    {space}\n"))).search is not None


def test_variants_that_differ_only_in_what_tune_searches_are_refused(tmp_path):
    tune = TUNED.replace("optimizer.lr:", "optimizer.weight_decay:")
    assert ("variants 'a' and 'b' differ only in what tune.space searches (optimizer.weight_decay), so tuned they are the same "
            "config; drop one of them") in error_of(write(tmp_path, tune))
    assert load_study(str(write(tmp_path, TUNED))).tune is not None  # a searched path they share: their tuned runs differ
    assert load_study(str(write(tmp_path, tune.replace("tune:", "search:")))).search is not None  # a search tunes one variant


def test_a_tune_block_naming_one_variant_or_dataset_is_refused(tmp_path):
    # (a tune block tunes every variant on every dataset: the keys were read and ignored)
    for key, value in (("variant", "b"), ("dataset", "mnist")):
        assert error_of(write(tmp_path, TUNED.replace("tune:", f"tune:\n  {key}: {value}"))).endswith(
            f"tune.{key}: a tune block tunes every variant on every dataset; {key} chooses the one config of a search block "
            f"(to tune only some variants, put the others in a study of their own)")
    assert load_study(str(write(tmp_path, TUNED.replace("tune:", "search:\n  variant: b")))).search.variant == "b"


def test_a_tuned_variant_that_lands_on_another_condition_is_refused(tmp_path):
    from suite.spec.derived import with_tuned

    study = load_study(str(write(tmp_path, TUNED)))
    tuned = with_tuned(study, {("mnist", "a"): {"optimizer.lr": 0.02}, ("mnist", "b"): {"optimizer.lr": 0.03}})
    assert tuned.variants == ("a", "b", "a@tuned", "b@tuned")
    with pytest.raises(StudyError) as err:  # its own settings: a@tuned would repeat a's runs (the same run keys)
        with_tuned(study, {("mnist", "a"): {"optimizer.lr": 0.01}, ("mnist", "b"): {"optimizer.lr": 0.03}})
    assert "tuning 'a' on mnist found optimizer.lr = 0.01, which makes 'a@tuned' the same config as 'a'; change tune.space" in str(err.value)


def test_search_objective_is_never_a_test_metric(tmp_path):
    path = write(tmp_path, "search:\n  objective: test_acc\n  space:\n    optimizer.lr: {type: float, low: 0.001, high: 0.1}\n")
    assert "search.objective: Input should be 'val_acc', 'val_loss' or 'val_mse' (got 'test_acc')" in error_of(path)


TUNED = "tune:\n  space:\n    optimizer.lr: {type: float, low: 0.001, high: 0.1, log: true}\n  trials: 4\n"


def test_a_search_fingerprint_follows_what_its_trials_depend_on(tmp_path):
    from suite.spec.derived import search_fingerprint

    def fingerprint(extra: str = "", base: str = BASE, variant: str = "a", smoke: bool = False, tune: str = TUNED) -> str:
        study = load_study(str(write(tmp_path, tune + extra, base)))
        return search_fingerprint(study, study.tune, variant, "mnist", smoke)

    first = fingerprint()
    assert len(first) == 16 and first == fingerprint()
    # not a base value the space overrides, nor the budget (a rerun may raise it), nor another variant's settings
    assert fingerprint(base=BASE.replace("lr: 0.01", "lr: 0.05")) == first
    assert fingerprint(tune=TUNED.replace("trials: 4", "trials: 9")) == first
    assert fingerprint(base=BASE.replace("weight_decay: 0.1", "weight_decay: 0.2")) == first
    # but the config its trials train, the space, the objective, the sampler, the pruner and the seed
    changed = [fingerprint(base=BASE.replace("hidden: [10]", "hidden: [12]")), fingerprint(variant="b"), fingerprint(smoke=True),
               fingerprint(tune=TUNED.replace("low: 0.001", "low: 0.002")),
               fingerprint("  objective: val_loss\n"), fingerprint("  sampler: random\n"), fingerprint("  pruner: none\n"),
               fingerprint("  seed: 1\n")]
    assert len({first, *changed}) == 1 + len(changed), [first, *changed]
    # and how the call computes its trials where that is not the default, 1 CPU thread (whose searches keep their value)
    from suite.spec.config import Execution

    study = load_study(str(write(tmp_path, TUNED)))
    how = lambda **e: search_fingerprint(study, study.tune, "a", "mnist", False, Execution(**e))  # noqa: E731
    assert how() == first and how(device="cpu", threads=1) == first
    assert len({first, how(threads=2), how(device="cuda"), how(packed=True), how(fused_optimizer=True)}) == 5


def test_each_dataset_of_a_tuned_study_has_its_own_search(tmp_path):
    from suite.spec.derived import tuning_name

    one = load_study(str(write(tmp_path, TUNED)))
    assert tuning_name(one, "b", False, "mnist") == "t/b" and tuning_name(one, "b", True, "mnist") == "t/b/smoke"
    two = load_study(str(write(tmp_path, TUNED + "datasets: [mnist, fashion_mnist]\n")))
    assert [tuning_name(two, "b", True, d) for d in two.datasets] == ["t/b/mnist/smoke", "t/b/fashion_mnist/smoke"]


def test_a_report_takes_the_tuning_of_the_configuration_as_it_is_now(tmp_path):
    from suite.report.search import tuned_search
    from suite.spec.derived import search_fingerprint

    study = load_study(str(write(tmp_path, TUNED)))
    now = search_fingerprint(study, study.tune, "b", "mnist", False)
    before = {("t/b", "mnist"): (4, {"optimizer.lr": 0.01}, 0.9, "0" * 16)}  # searched with another configuration
    assert tuned_search(before, study, "b", "mnist", False) == (0, None, None)
    apart = {**before, (f"t/b@{now[:8]}", "mnist"): (4, {"optimizer.lr": 0.02}, 0.8, now)}
    assert tuned_search(apart, study, "b", "mnist", False) == (4, {"optimizer.lr": 0.02}, 0.8)
    same = {("t/b", "mnist"): (4, {"optimizer.lr": 0.03}, 0.7, now)}
    assert tuned_search(same, study, "b", "mnist", False) == (4, {"optimizer.lr": 0.03}, 0.7)
    # a parent run from before fingerprints, or a search read from a report's files: as before
    legacy = {("t/b", "mnist"): (4, {"optimizer.lr": 0.04}, 0.6, None)}
    assert tuned_search(legacy, study, "b", "mnist", False) == (4, {"optimizer.lr": 0.04}, 0.6)


def test_list_aligns_its_columns_and_counts_tuned_runs_and_trials(capsys):
    from suite.cli import main

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    questions = [line.index(load_study(line.split()[0]).question) for line in lines]
    assert len(lines) == len(list_studies()) and len(set(questions)) == 1  # every question starts in the same column
    tuned = next(line for line in lines if line.startswith("optimizers_tuned "))
    assert "20 + 20 tuned runs, 80 trials" in tuned  # 4 optimizers x 5 seeds, again tuned, after 4 x 20 trials


@pytest.mark.parametrize("path", sorted(__import__("pathlib").Path(__file__).resolve().parents[1].glob("studies/*.yaml")), ids=lambda p: p.stem)
def test_smoke_keeps_every_run_of_a_catalogue_study_distinct(path):
    study = load_study(str(path))
    smoke = expand(study, smoke=True)
    assert len({s.run_key for s in smoke}) == len(smoke) == len(study.configs) * len(set(s.seed for s in smoke))


def test_smoke_shrinks_a_grid_over_epochs_and_train_size_without_collapsing_it(tmp_path):
    """The axes smoke shrinks keep their distinct values, in order (it used to set them all to the smoke value)."""
    study = load_study(str(write(tmp_path, "grid: {train.epochs: [1, 3, 10], data.train_size: [500, 20000, null]}\nseeds: 2\n"
                                           "smoke: {seeds: 2, epochs: 2, train_size: 2000}\n")))
    smoke = expand(study, smoke=True)
    assert len({s.run_key for s in smoke}) == len(smoke) == 2 * 9 * 2  # variants a, b x 3 x 3 grid points x 2 seeds
    by_point = {dict(s.point)["train.epochs"]: s.config.train.epochs for s in smoke}
    assert by_point == {1: 1, 3: 2, 10: 3}  # distinct and ordered, no more than the full value, capped near the smoke's 2
    sizes = {dict(s.point)["data.train_size"]: s.config.data.train_size for s in smoke}
    assert sizes == {500: 500, 20000: 1334, None: 2000}  # 500 stays; then 2/3 and all of the smoke's 2000
    full = {s.config.train.epochs for s in expand(study)}
    assert full == {1, 3, 10}  # the full study is untouched


def test_smoke_shrinks_a_step_schedule_with_the_epochs(tmp_path):
    """A step decay every 5 of 15 epochs decays every epoch of a 2-epoch smoke run (else step and constant train alike)."""
    study = load_study(str(write(tmp_path, "smoke: {seeds: 1, epochs: 2}\n", BASE.replace("adam, lr: 0.01}", "adam, lr: 0.01}\n  "
                                 "train: {epochs: 15, schedule: {name: step, step_every: 5}}"))))
    smoke, full = expand(study, smoke=True)[0].config.train, expand(study)[0].config.train
    assert (smoke.epochs, smoke.schedule.step_every) == (2, 1) and (full.epochs, full.schedule.step_every) == (15, 5)
    never = load_study(str(write(tmp_path, "smoke: {seeds: 1, epochs: 2}\n", BASE.replace("adam, lr: 0.01}", "adam, lr: 0.01}\n  "
                                 "train: {epochs: 3, schedule: {name: step, step_every: 3}}"))))
    assert expand(never, smoke=True)[0].config.train.schedule.step_every == 3  # never decays in full, nor in smoke


def test_smoke_of_a_single_valued_field_is_the_smoke_block_value(tmp_path):
    study = load_study(str(write(tmp_path, "smoke: {seeds: 1, epochs: 1, train_size: 300}\n")))
    (spec,) = [s for s in expand(study, smoke=True) if s.variant == study.variants[0]][:1]
    assert spec.config.train.epochs == 1 and spec.config.data.train_size == 300


def test_smoke_never_makes_a_study_bigger(tmp_path):
    # a study of 300 training and 100 validation images keeps them in smoke (the block says 2,000 and 500)
    small = BASE.replace("optimizer: {name: adam, lr: 0.01}", "optimizer: {name: adam, lr: 0.01}\n  data: {train_size: 300, val_size: 100, test_size: 50}")
    study = load_study(str(write(tmp_path, "smoke: {seeds: 1, epochs: 1, train_size: 2000, val_size: 500, test_size: 1000}", base=small)))
    data = expand(study, smoke=True)[0].config.data
    assert (data.train_size, data.val_size, data.test_size) == (300, 100, 50)


def test_a_studies_dir_without_study_files_is_one_line(tmp_path, capsys):
    from suite.cli import main

    for command in (["list"], ["smoke"]):
        assert main([*command, "--studies-dir", str(tmp_path / "nowhere")]) == 2
        assert capsys.readouterr().err == f"error: no study files (*.yaml) in {tmp_path / 'nowhere'}; pass --studies-dir the folder that holds them\n"


def test_list_warns_of_two_files_that_name_one_study(tmp_path, capsys):
    from suite.cli import main

    for file in ("a.yaml", "b.yaml"):
        (tmp_path / file).write_text(BASE)
    assert main(["list", "--studies-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.count("q?") == 2 and err.splitlines()[0] == "warning: a.yaml and b.yaml both name their study 't': their runs and reports would mix; rename one"
    assert err.count("\n") == 3  # and each names its study otherwise than its file (below)


def test_a_file_whose_study_name_differs_from_its_own_is_named_by_list_and_validate(tmp_path, capsys):
    """`list` showed 'notmystudy' for renamed.yaml, and `suite validate notmystudy` then found no such study."""
    from suite.cli import main

    (tmp_path / "renamed.yaml").write_text(BASE.replace("name: t", "name: notmystudy"))
    (tmp_path / "t.yaml").write_text(BASE.replace("  b: {optimizer: {weight_decay: 0.1}}\n", "") + "seeds: 1\n")
    warning = ("warning: renamed.yaml names its study 'notmystudy': commands call it 'renamed' (its file's name), its runs and "
               "reports go under 'notmystudy'; give both one name\n")
    assert main(["list", "--studies-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().err == warning
    assert main(["validate", "renamed", "t", "--studies-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err == warning and out.splitlines()[1] == f"{tmp_path / 't.yaml'}: ok (1 run: 1 dataset x 1 variant x 1 seed)", out
    # a file outside the studies folder is called by its path: its name is its own
    assert main(["validate", str(tmp_path / "renamed.yaml"), "--studies-dir", str(tmp_path / "elsewhere")]) == 0
    assert capsys.readouterr().err == ""


def test_chained_merge_keys_are_not_duplicates(tmp_path):
    """An anchored mapping that merges and overrides, merged again elsewhere: valid YAML, one key each."""
    text = ("name: anchors\nquestion: q?\nvariants:\n  plain: {optimizer: &adam {name: adam, lr: 0.001}}\n"
            "  fast: {optimizer: &fast {<<: *adam, lr: 0.01}}\nbase:\n  model: {name: mlp, hidden: [8]}\n"
            "  optimizer: {<<: *fast, weight_decay: 0.0}\n")
    study = load_study(str(write(tmp_path, "", text)))
    assert study.configs["mnist", "fast"].optimizer.lr == 0.01 and study.configs["mnist", "plain"].optimizer.lr == 0.001
    assert "the key 'lr' appears twice" in error_of(write(tmp_path, "", text.replace("lr: 0.001}", "lr: 0.001, lr: 0.1}")))


def test_an_error_in_a_variant_is_its_own_beside_a_grid_below_it(tmp_path):
    base = "name: t\nquestion: q?\nbase: {optimizer: {name: adam, lr: 0.1}}\ngrid: {optimizer.lr: [0.1, 0.01]}\n"
    assert "variants.b.optimizer.name: unknown or missing name 'adamm'" in error_of(
        write(tmp_path, "variants:\n  a: {}\n  b: {optimizer: {name: adamm}}\n", base))
    assert "base.optimizer.name: unknown or missing name 'nope'" in error_of(write(tmp_path, "", base.replace("name: adam", "name: nope")))
    # ... and a variant that only sets a field of the block whose name the base got wrong (it was blamed)
    assert "base.optimizer.name: unknown or missing name 'nope'" in error_of(
        write(tmp_path, "variants:\n  a: {optimizer: {weight_decay: 0.1}}\n  b: {}\n", base.replace("name: adam", "name: nope")))


def test_a_study_file_with_an_upper_case_suffix_is_a_path(tmp_path):
    (tmp_path / "Mine.YAML").write_text(BASE)
    assert load_study(str(tmp_path / "Mine.YAML")).name == "t"  # (was: no study named 'Mine.YAML' in studies/)


def test_a_sqlite_database_that_is_not_an_mlflow_store_is_left_untouched(tmp_path, capsys):
    """Pointed at another program's SQLite file (or the Optuna storage), every command wrote MLflow's ~30 tables into it."""
    import sqlite3
    import subprocess
    import sys

    from suite.cli import main

    db, optuna, fresh = tmp_path / "theirs.db", tmp_path / "optuna.db", tmp_path / "wal.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE precious (x)")
    conn.close()
    with sqlite3.connect(optuna) as conn:  # (Optuna's storage has an alembic_version table too)
        conn.execute("CREATE TABLE alembic_version (version_num)")
    conn.close()
    with sqlite3.connect(fresh) as conn:  # a store made ahead, in WAL mode, with no tables yet: MLflow's to fill
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    from suite import tracking

    assert tracking.connect(f"sqlite:///{fresh}").search_experiments()[0].name == "Default"
    assert main(["check", "regularization", "--tracking-uri", f"sqlite:///{optuna}"]) == 2
    assert "is a SQLite database, but not an MLflow store" in capsys.readouterr().err
    refused = (f"error: {db} is a SQLite database, but not an MLflow store (MLflow would add its tables to it); pass "
               "--tracking-uri the store's file\n")
    for command in (["report", "regularization"], ["check", "regularization"], ["evaluate", "0123abcd"],
                    ["study", "regularization", "--smoke"]):
        assert main([*command, "--tracking-uri", f"sqlite:///{db}"]) == 2
        assert capsys.readouterr().err == refused
    ui = subprocess.run([sys.executable, "-m", "suite", "ui", "--tracking-uri", f"sqlite:///{db}", "--port", "1"],
                        capture_output=True, text=True, timeout=120)
    assert ui.returncode == 2 and ui.stderr == refused  # before any server starts (it said so from a thread, and served on)
    with sqlite3.connect(db) as conn:
        assert [name for (name,) in conn.execute("SELECT name FROM sqlite_master")] == ["precious"]
    conn.close()


def test_store_urls_that_keep_nothing_or_name_no_store_are_refused_before_anything_trains(tmp_path, capsys, monkeypatch):
    """sqlite:/// (an in-memory store: 4 runs trained, then "no MLflow store at ."), ?options (a second file beside the
    store, and its lock), an unknown scheme (MLflow's error cut mid-word, exit 1), a plain path as Optuna storage."""
    from suite.cli import main

    store = f"sqlite:///{tmp_path}/m.db"
    for uri, says in (("sqlite:///", "'sqlite:///': a store is sqlite:///PATH or a tracking server's http://HOST:PORT, with a file's path"),
                      (f"{store}?mode=ro", "options after '?' are not taken"), (f"sqlite:///{tmp_path}/", "with a file's path")):
        assert main(["study", "regularization", "--smoke", "--tracking-uri", uri]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: --tracking-uri ") and says in err, err
    assert main(["report", "regularization", "--tracking-uri", "garbage://x"]) == 2  # (MLflow's list of schemes, cut mid-word)
    assert capsys.readouterr().err == ("error: garbage://x: MLflow has no store for the scheme 'garbage' (a store is sqlite:///PATH, "
                                       "a tracking server's http://HOST:PORT or a database URL)\n")
    monkeypatch.setenv("OPTUNA_STORAGE", str(tmp_path / "o.db"))
    assert main(["study", "regularization", "--smoke", "--tracking-uri", store]) == 2
    assert capsys.readouterr().err == (f"error: OPTUNA_STORAGE={tmp_path / 'o.db'}: an Optuna storage is sqlite:///PATH (a file; "
                                       f"sqlite:///{tmp_path / 'o.db'} here?) or a database URL (postgresql+psycopg://...)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing trained, no store made
    for value in ("abc", "0"):  # (MLflow read it at its first request: a ValueError traceback; 0 requests refuse)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", value)
        assert main(["report", "regularization", "--tracking-uri", "http://127.0.0.1:1"]) == 2
        assert capsys.readouterr().err == f"error: MLFLOW_HTTP_REQUEST_TIMEOUT='{value}': a whole number, 1 or more\n"


def test_an_empty_ui_host_is_the_default_not_every_interface(monkeypatch, capsys):
    from suite.cli import main, parser

    monkeypatch.setenv("SUITE_UI_HOST", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # (mlflow.set_tracking_uri, by earlier tests, sets it)
    assert parser().parse_args(["ui"]).host == "127.0.0.1"  # (uvicorn took '' as every interface: the store's write API too)
    assert main(["ui", "--host", ""]) == 2
    assert capsys.readouterr().err == "error: --host '': an address to listen on, e.g. 127.0.0.1 (0.0.0.0: every interface)\n"


def test_a_damaged_store_template_is_made_again_not_copied_into_new_stores(tmp_path, monkeypatch):
    import mlflow

    from suite import tracking

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = tmp_path / "cache" / "suite" / f"mlflow-{mlflow.__version__}-empty.db"
    template.parent.mkdir(parents=True)
    template.write_bytes(b"not a database" * 100)
    client = tracking.connect(f"sqlite:///{tmp_path}/new.db")  # (was: "file is not a database", the garbage copied into it)
    assert client.search_experiments()[0].name == "Default" and tracking.MLFLOW_TABLES <= tracking._tables(template)


def test_reading_commands_do_not_create_a_store_where_there_is_none(tmp_path, capsys):
    """A typo'd --tracking-uri for report, check or evaluate is one line; no empty store (or folder) appears there."""
    from suite.cli import main

    db = tmp_path / "typo" / "mlflow.db"
    for command in (["report", "regularization"], ["check", "regularization"], ["evaluate", "0123abcd"]):
        assert main([*command, "--tracking-uri", f"sqlite:///{db}"]) == 1
        assert capsys.readouterr().err == f"error: no MLflow store at {db}; run a study first (make study STUDY=...) or pass --tracking-uri\n"
    assert not (tmp_path / "typo").exists()
    # a plain path (MLflow would take it for its deprecated folder store, and say so in words that read like ours)
    for command in (["report", "regularization"], ["smoke"]):
        assert main([*command, "--tracking-uri", str(db)]) == 2
        assert capsys.readouterr().err.startswith(f"error: --tracking-uri {db}: a store is sqlite:///PATH (a file; sqlite:///{db} here?)")
    empty = tmp_path / "empty.db"  # an empty file (touched, or the wrong path): MLflow wrote a store's tables into it
    empty.touch()
    for command in (["report", "regularization"], ["check", "regularization"], ["evaluate", "0123abcd"]):
        assert main([*command, "--tracking-uri", f"sqlite:///{empty}"]) == 1
        assert f"error: no MLflow store at {empty} (an empty file)" in capsys.readouterr().err
    assert empty.stat().st_size == 0


def test_a_bad_option_is_one_line_and_commands_take_only_options_that_act(capsys):
    """argparse's usage block is for --help; check and push write no report and a search report links no runs, so
    --reports-dir and --ui-url are refused where they would do nothing."""
    from suite.cli import main

    for argv in (["check", "regularization", "--reports-dir", "x"], ["push", "regularization", "--to", "http://h", "--ui-url", "u"],
                 ["tune", "regularization", "--ui-url", "u"],
                 ["study", "regularization", "--threads", "two"], ["stud"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "--help)" in err, err
        if argv[0] == "check":
            assert err == "error: unrecognized arguments: --reports-dir x (see suite --help)\n"


def test_an_empty_path_or_url_option_is_refused_not_read_as_the_default(tmp_path, monkeypatch, capsys):
    """`--tracking-uri ""` trained into ./mlflow.db (or $MLFLOW_TRACKING_URI), `--reports-dir ""` wrote into the current
    folder, `--storage ""` made ./optuna.db: each exited 0 (an unset shell variable in a script gives such a value)."""
    from suite.cli import main

    monkeypatch.chdir(tmp_path)
    for option, argv in (("--tracking-uri", ["study", "regularization", "--smoke"]), ("--reports-dir", ["report", "regularization"]),
                         ("--storage", ["tune", "regularization", "--smoke"]), ("--data-dir", ["evaluate", "abc"]),
                         ("--to", ["push", "regularization"]), ("--dir", ["server", "stop"])):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, option, " " if option == "--storage" else ""])
        assert exit_.value.code == 2
        default = "give a value" if option == "--to" else "leave the option out for its default"  # (--to has none)
        assert capsys.readouterr().err == f"error: argument {option}: empty; {default} (see suite {argv[0]} --help)\n"
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_database_or_a_scheme_no_database_takes_is_bad_input(tmp_path, capsys):
    """Exit 2 and one line, as for a SQLite file that is not an MLflow store (was exit 1 with SQLite's or SQLAlchemy's
    words); the study file itself, given as the store, is left as it was. An unknown MLflow scheme on a store that is not
    sqlite gave a note on claims before its error (two lines)."""
    from suite.cli import main

    study = tmp_path / "t.yaml"
    study.write_text(BASE)
    before = study.read_bytes()
    assert main(["study", str(study), "--smoke", "--tracking-uri", f"sqlite:///{study}"]) == 2
    assert capsys.readouterr().err == (f"error: --tracking-uri sqlite:///{study}: {study} is not a SQLite database (MLflow cannot "
                                       "open it as a store); a store is sqlite:///PATH of an MLflow store's file\n")
    assert main(["study", str(study), "--smoke", "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--storage", f"sqlite:///{study}"]) == 2
    assert capsys.readouterr().err == (f"error: --storage sqlite:///{study}: {study} is not a SQLite database; an Optuna storage is "
                                       "sqlite:///PATH (a new or an Optuna file) or a database URL\n")
    assert study.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]
    assert main(["study", str(study), "--smoke", "--tracking-uri", "foo://bar"]) == 2
    assert capsys.readouterr().err == ("error: foo://bar: MLflow has no store for the scheme 'foo' (a store is sqlite:///PATH, "
                                       "a tracking server's http://HOST:PORT or a database URL)\n")
    (tmp_path / "folder").mkdir()  # (was exit 1: "unable to open database file")
    for option in ("--tracking-uri", "--storage"):
        assert main(["study", str(study), "--smoke", option, f"sqlite:///{tmp_path}/folder"]) == 2
        assert capsys.readouterr().err.startswith(f"error: {option} 'sqlite:///{tmp_path}/folder': {tmp_path}/folder is a folder; ")
    search = tmp_path / "s.yaml"
    search.write_text(BASE + "search: {space: {optimizer.lr: {type: float, low: 0.001, high: 0.1}}}\n")
    store = f"sqlite:///{tmp_path}/m.db"
    for url, code, says in (("foo://", 2, "error: the Optuna storage foo:// is no database URL SQLAlchemy takes (Can't load plugin: "
                                           "sqlalchemy.dialects:foo); an Optuna storage is sqlite:///PATH or a database URL"),
                            ("postgresql+psycopg://u@127.0.0.1:1/d", 1, "error: cannot open the Optuna storage postgresql+psycopg://")):
        assert main(["tune", str(search), "--smoke", "--trials", "1", "--tracking-uri", store, "--storage", url]) == code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(says), err
    # another MLflow store as the Optuna storage: Optuna added its tables to it, then blamed its schema version (exit 1)
    other = tmp_path / "other" / "mlflow.db"
    from suite import tracking

    tracking.connect(f"sqlite:///{other}")
    tables = tracking._tables(other)
    assert main(["tune", str(search), "--smoke", "--tracking-uri", store, "--storage", f"sqlite:///{other}"]) == 2
    assert capsys.readouterr().err == (f"error: --storage sqlite:///{other}: {other} is an MLflow store, not an Optuna storage; give "
                                       "each its own file\n")
    assert tracking._tables(other) == tables


def test_a_file_named_without_yaml_is_told_so_not_looked_up_as_a_name(tmp_path):
    (tmp_path / "t.txt").write_text(BASE)
    with pytest.raises(StudyError, match=f"^{tmp_path}/t.txt: a study file's name ends in .yaml \\(or .yml\\)$"):
        load_study(str(tmp_path / "t.txt"))  # (was: no study named '.../t.txt' in studies/ (known: ...))
    with pytest.raises(StudyError, match=f"^{tmp_path}: a folder; a study is studies/NAME.yaml or a path to a YAML file$"):
        load_study(str(tmp_path))


def test_smoke_sizes_beyond_the_split_are_the_split_s_rest(tmp_path):
    """A smoke train_size (written, or the default 2,000 under a large val_size) that the split cannot hold beside the
    validation set: those smoke runs failed one by one; smoke now takes what the split holds."""
    from suite.spec.study import expand

    for smoke, base, sizes in (("smoke: {train_size: 100000}", "", (59500, 500)),
                               ("smoke: {val_size: null}", "  data: {val_size: 58500}\n", (1500, 58500))):
        path = write(tmp_path, smoke, BASE.replace("base:\n", "base:\n" + base))
        runs = expand(load_study(str(path)), smoke=True)
        assert {(r.config.data.train_size, r.config.data.val_size) for r in runs} == {sizes}


def test_a_folder_or_broken_link_named_like_a_study_file_is_said_to_be_one(tmp_path):
    """It was listed among the known studies of the message that said there was no such study."""
    (tmp_path / "real.yaml").write_text(BASE)
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "broken.yaml").symlink_to(tmp_path / "nowhere")
    for name in ("folder", "broken"):
        with pytest.raises(StudyError, match=f"^{tmp_path / name}.yaml is not a study file \\(a folder, or a link to nothing\\)$"):
            load_study(name, tmp_path)
        with pytest.raises(StudyError, match=f"^{tmp_path / name}.yaml: not a study file"):
            load_study(str(tmp_path / f"{name}.yaml"))
    with pytest.raises(StudyError, match=f"^no study named 'other' in {tmp_path}/ \\(known: real\\)$"):
        load_study("other", tmp_path)


def test_a_damaged_store_is_not_told_to_run_again_and_sqlalchemy_preambles_are_skipped(capsys):
    """Running again cannot mend a malformed database file; SQLAlchemy's autoflush line came before the real error."""
    from mlflow.exceptions import MlflowException

    from suite.cli import _failed

    assert _failed(MlflowException("(sqlite3.DatabaseError) database disk image is malformed"), "study") == 1
    assert capsys.readouterr().err == ("error: the MLflow store failed: (sqlite3.DatabaseError) database disk image is malformed; "
                                       "the store's file is damaged: restore it from a copy, or pass another --tracking-uri\n")
    autoflush = MlflowException("(raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block)\n"
                                "(sqlite3.OperationalError) attempt to write a readonly database")
    assert _failed(autoflush, "report") == 1
    assert capsys.readouterr().err == ("error: the MLflow store failed: (sqlite3.OperationalError) attempt to write a readonly "
                                       "database; run it again once that is mended\n")


def test_a_study_without_variants_says_its_one_variant_is_base(tmp_path):
    alone = BASE.split("variants:")[0]
    assert "baseline: 'a' is not a variant (a study without variants has one, base)" in error_of(write(tmp_path, "baseline: a", alone))
    assert load_study(str(write(tmp_path, "claims: ['base >= 10%']", alone))).variants == ("base",)
    # a key with nothing after it (was "Input should be a valid dictionary", with no word of what it got)
    assert error_of(write(tmp_path, "variants:", alone)).endswith("variants: Input should be a valid dictionary (got nothing: the "
                                                                   "key is written without a value)")
