"""Plug-ins: a researcher's own model, dataset, optimizer, schedule and augmentation, without editing the suite.

A tiny plug-in package is written here, installed with `pip install --target` into a temporary folder
(its entry point `suite.components` registers a model, a dataset and an optimizer; a second module,
named in the study's `plugins:` list, a schedule and an augmentation), and a smoke study that uses all
five trains in a subprocess with that folder on PYTHONPATH, through worker processes.
"""

import re
import subprocess
import sys
import textwrap

import mlflow
import pandas as pd
import pytest

from conftest import ROOT, needs_mnist, run_python

pytestmark = [needs_mnist, pytest.mark.slow]

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "suite-example-plugin"
version = "0.3.1"

[project.entry-points."suite.components"]
example = "suite_example_plugin.components"

[tool.setuptools]
packages = ["suite_example_plugin"]
"""

# What a study may write: records and typed parameters, no torch (suite validate stays fast).
COMPONENTS = '''
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from suite.components import Component


class Linear(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["linear"]
    bias: bool = True


class SignSGD(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["signsgd"]
    lr: float = Field(gt=0)
    weight_decay: float = Field(0.0, ge=0)


COMPONENTS = [
    Component("model", "linear", "suite_example_plugin.parts:build_linear", "softmax regression: one linear layer", Linear),
    Component("optimizer", "signsgd", "suite_example_plugin.parts:SignSGD", "steps by the sign of the gradient", SignSGD),
    Component("dataset", "blobs", "suite_example_plugin.parts:blobs", "three Gaussian blobs in the plane", task="classification",
              inputs=((2,), 3)),
]
'''

EXTRA = '''
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from suite.components import Component


class Halving(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["halving"]
    every: int = Field(1, ge=1, description="epochs between halvings")


COMPONENTS = [
    Component("schedule", "halving", "suite_example_plugin.parts:halving", "halve the rate every `every` epochs", Halving),
    Component("augmentation", "noise", "suite_example_plugin.parts:noise", "add Gaussian noise of this std", float),
]
'''

PARTS = '''
import torch
from torch import nn

from suite.components.data import Raw


def build_linear(cfg, in_shape, outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(in_shape).prod()), outputs, bias=cfg.bias))


class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(torch.sign(p.grad + group["weight_decay"] * p), alpha=-group["lr"])


def blobs(root):
    gen = torch.Generator().manual_seed(3)
    centres = torch.tensor([[0.0, 2.0], [-2.0, -1.0], [2.0, -1.0]])

    def draw(n):
        y = torch.randint(0, 3, (n,), generator=gen)
        return centres[y] + torch.randn(n, 2, generator=gen), y

    (tx, ty), (vx, vy) = draw(3000), draw(1000)
    return Raw(tx, ty, vx, vy, (0.0, 0.0), (1.0, 1.0), 1.0, ())


def halving(cfg, t, total, steps_per_epoch):
    return 0.5 ** (t // steps_per_epoch // cfg.every)


def noise(x, std, fill, gen):
    return x + std * torch.randn(x.shape, generator=gen, device=x.device)
'''

STUDY = """
name: plugged
question: Does a sign-SGD plug-in train a plug-in linear model on plug-in blobs and on MNIST?
plugins: [suite_example_plugin.extra]
datasets: [blobs, mnist]
seeds: 2
metric: test_acc
baseline: sgd
base:
  model: {name: linear}
  optimizer: {name: sgd, lr: 0.05}
  train: {batch_size: 100, epochs: 2}
variants:
  sgd: {}
  signsgd: {optimizer: {name: signsgd, lr: 0.01}, train: {schedule: {name: halving}}}
  noisy: {data: {augment: {noise: 0.3}}}
smoke: {seeds: 2, epochs: 2, train_size: 600, val_size: 200, test_size: 500}
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """The plug-in package, installed with pip into a folder of its own (not into the suite's environment)."""
    src, target = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("site")
    package = src / "suite_example_plugin"
    package.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "components.py").write_text(textwrap.dedent(COMPONENTS))
    (package / "extra.py").write_text(textwrap.dedent(EXTRA))
    (package / "parts.py").write_text(textwrap.dedent(PARTS))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(src)], check=True, cwd=src)
    return target


def test_a_pip_installed_plugin_trains_in_a_smoke_study(plugin, tmp_path):
    study = tmp_path / "plugged.yaml"
    study.write_text(STUDY)
    checked = run_python(["-c", "import sys; from suite.spec.study import load_study; s = load_study(sys.argv[1]); "
                         "print(len(s.configs), 'torch' in sys.modules)", str(study)], plugin, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.split() == ["6", "False"]  # 2 datasets x 3 variants, validated without importing torch

    store = tmp_path / "mlflow.db"
    done = run_python(["-m", "suite", "study", str(study), "--smoke", "--tracking-uri", f"sqlite:///{store}", "--reports-dir",
                str(tmp_path / "reports"), "--executor", "local", "--workers", "2"], plugin, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = pd.read_csv(tmp_path / "reports" / "smoke" / "plugged" / "runs.csv")
    assert len(runs) == 12 and runs["test_acc"].notna().all()
    blobs = runs[runs["dataset"] == "blobs"]
    assert (blobs["test_acc"] > 0.7).all()  # three well-separated blobs (chance: 1/3): every plug-in variant learns them
    assert runs["config.model.name"].eq("linear").all() and set(runs["config.optimizer.name"]) == {"sgd", "signsgd"}
    assert set(runs["config.train.schedule.name"]) == {"constant", "halving"} and runs["config.data.augment.noise"].max() == 0.3
    assert set(runs["config.train.schedule.every"].dropna()) == {1}  # the plug-in schedule's own field, on its runs only
    outcomes = runs.groupby(["dataset", "variant"])["test_loss"].apply(tuple)
    assert outcomes.nunique() == len(outcomes)  # the optimizer, schedule and augmentation changed the training

    mlflow.set_tracking_uri(f"sqlite:///{store}")
    found = mlflow.search_runs(experiment_names=["plugged/smoke"], filter_string="tags.`suite.run_key` != ''")
    assert len(found) == 12
    assert set(found["tags.suite.plugins"]) == {"suite-example-plugin==0.3.1"}  # provenance: which package, which version

    # the stored weights reload into the plug-in's model (its `plugins:` module loaded from the run's resolved config)
    one = found[(found["tags.suite.dataset"] == "blobs") & (found["tags.suite.variant"] == "signsgd")]["run_id"].iloc[0]
    again = run_python(["-m", "suite", "evaluate", one, "--tracking-uri", f"sqlite:///{store}"], plugin, tmp_path)
    assert again.returncode == 0 and "test_acc" in again.stdout and "DIFFERENT" not in again.stdout, again.stdout + again.stderr
    assert "identical" in again.stdout


def test_a_plugin_that_cannot_be_imported_is_one_line(plugin, tmp_path):
    study = tmp_path / "bad.yaml"
    study.write_text(STUDY.replace("suite_example_plugin.extra", "suite_example_plugin.missing"))
    out = run_python(["-m", "suite", "validate", str(study)], plugin, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.endswith(f"{study}: plugins: plug-in 'suite_example_plugin.missing' cannot be imported "
                         "(ModuleNotFoundError: No module named 'suite_example_plugin.missing')")
    study.write_text(STUDY.replace("{name: linear}", "{name: linearr}"))
    wrong = run_python(["-m", "suite", "validate", str(study)], plugin, tmp_path)
    assert wrong.returncode == 2 and "base.model.name: unknown or missing name 'linearr' (allowed: mlp, cnn, resnet, linear)" in wrong.stderr


def test_the_readme_plugin_example_trains(tmp_path):
    """The README's two files, my_tricks/components.py and my_tricks/parts.py, as written there, train a smoke study."""
    readme = (ROOT / "README.md").read_text()
    blocks = {block.splitlines()[0].split(":")[0].lstrip("# "): block for block in readme.split("```python\n")[1:]
              for block in [block.split("```")[0]] if block.startswith("# my_tricks/")}
    assert set(blocks) == {"my_tricks/components.py", "my_tricks/parts.py"}
    (tmp_path / "my_tricks").mkdir()
    (tmp_path / "my_tricks" / "__init__.py").write_text("")
    for name, text in blocks.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "mine.yaml").write_text("""
name: mine
question: Does the README's plug-in train?
plugins: [my_tricks.components]
datasets: [mnist]
seeds: 1
metric: test_acc
baseline: sgd
base:
  model: {name: mlp, hidden: [32]}
  optimizer: {name: sgd, lr: 0.05}
  train: {batch_size: 100, epochs: 1}
variants:
  sgd: {}
  sign: {optimizer: {name: signsgd, lr: 0.001}}
  noisy: {data: {augment: {noise: 0.2}}}
smoke: {seeds: 1, epochs: 1, train_size: 1000, val_size: 200, test_size: 500}
""")
    out = run_python(["-m", "suite", "study", "mine.yaml", "--smoke", "--executor", "serial", "--tracking-uri",
               f"sqlite:///{tmp_path / 'mlflow.db'}", "--reports-dir", "reports"], tmp_path, tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    runs = pd.read_csv(tmp_path / "reports" / "smoke" / "mine" / "runs.csv")
    assert len(runs) == 3 and (runs["test_acc"] > 0.3).all()  # (chance: 0.1)
    assert runs["test_loss"].nunique() == 3  # the optimizer and the augmentation changed the training
    # a plug-in that is no installed package has no version: a hash of its source files says which code trained the run
    (source,) = set(runs["plugins"].dropna())
    assert runs["plugins"].notna().tolist() == [False, True, True]  # (the sgd variant used none of it)
    assert re.fullmatch(r"my_tricks\.components \(not an installed package; source sha256 [0-9a-f]{12}\)", source), source
    report = (tmp_path / "reports" / "smoke" / "mine" / "report.md").read_text()
    assert f"; plug-ins: {source}" in report
    assert "writes this report; with its plug-ins `my_tricks.components` importable: see Provenance)." in report
    rebuilt = run_python(["-m", "suite", "report", "mine.yaml", "--smoke", "--from-runs", "--reports-dir", "reports"], tmp_path, tmp_path)
    assert rebuilt.returncode == 0 and f"; plug-ins: {source}" in (tmp_path / "reports" / "smoke" / "mine" / "report.md").read_text()
