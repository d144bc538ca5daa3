"""A plug-in that misbehaves: its own runs fail with a line that says which component and where, each keeps its
traceback, the other runs stand, and a constructor module that does not exist is refused before anything trains."""

import re

import mlflow
import pytest

from conftest import needs_mnist, run_python

COMPONENTS = '''
from typing import Literal
from pydantic import BaseModel, ConfigDict
from suite.components import Component


class Dict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["dictmodel"]


class Fast(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["fast"]


COMPONENTS = [
    Component("augmentation", "nothing", "bad.parts:nothing", "returns None", float),
    Component("augmentation", "boom", "bad.parts:boom", "raises in its own code", float),
    Component("model", "dictmodel", "bad.parts:dictmodel", "returns a dict", Dict),
    Component("schedule", "fast", "bad.parts:fast", "returns a string", Fast),
]
'''

PARTS = '''def nothing(x, value, fill, gen):
    return None


def boom(x, value, fill, gen):
    return x + undefined_name


def dictmodel(cfg, in_shape, outputs):
    return {}


def fast(cfg, t, total, steps_per_epoch):
    return "fast"
'''

STUDY = """
name: broken
question: Do a plug-in's own failures say which component failed, and where?
plugins: [bad.components]
datasets: [mnist]
seeds: 1
metric: test_acc
baseline: ok
base:
  model: {name: mlp}
  optimizer: {name: sgd, lr: 0.05}
  train: {batch_size: 100, epochs: 1}
variants:
  ok: {}
  nothing: {data: {augment: {nothing: 0.1}}}
  boom: {data: {augment: {boom: 0.1}}}
  dict: {model: {name: dictmodel}}
  fast: {train: {schedule: {name: fast}}}
claims:
  - boom > ok
smoke: {seeds: 1, epochs: 1, train_size: 300, val_size: 100, test_size: 200}
"""


@pytest.fixture
def plugin(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "__init__.py").write_text("")
    (tmp_path / "bad" / "components.py").write_text(COMPONENTS)
    (tmp_path / "bad" / "parts.py").write_text(PARTS)
    (tmp_path / "broken.yaml").write_text(STUDY)
    return tmp_path


def suite(args, cwd):
    """`suite ARGS` in `cwd`, which holds the plug-in."""
    return run_python(["-m", "suite", *args], cwd, cwd)


def test_a_constructor_module_that_does_not_exist_is_refused_when_the_plugin_loads(plugin):
    (plugin / "bad" / "components.py").write_text(COMPONENTS.replace("bad.parts:boom", "bad.prats:boom"))
    out = suite(["validate", "broken.yaml"], plugin)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.endswith("plug-in 'bad.components': augmentation 'boom' is built by bad.prats:boom, but there is no module "
                         "bad.prats"), line


def test_a_plugin_augmentation_of_the_wrong_type_names_its_key(plugin):
    (plugin / "broken.yaml").write_text(STUDY.replace("{nothing: 0.1}", "{nothing: lots}"))
    out = suite(["validate", "broken.yaml"], plugin)
    assert out.returncode == 2 and out.stderr.strip().endswith(  # (was "variants.nothing.data.augment: Input should be ...")
        "variants.nothing.data.augment.nothing: Input should be a valid number, unable to parse string as a number (got 'lots')")


@needs_mnist
@pytest.mark.slow
def test_a_failing_plugin_names_itself_keeps_its_traceback_and_leaves_the_other_runs(plugin):
    store = f"sqlite:///{plugin / 'mlflow.db'}"
    out = suite(["study", "broken.yaml", "--smoke", "--executor", "serial", "--tracking-uri", store, "--reports-dir", "reports"],
                plugin)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if "/seed=0" in line}
    assert "test_acc=" in lines["ok/seed=0"]
    assert ("FAILED (TypeError: augmentation 'nothing' (bad.parts:nothing) returned None, not a tensor of the batch's shape "
            "(100, 1, 28, 28))") in lines["nothing/seed=0"]
    assert "FAILED (NameError: name 'undefined_name' is not defined (at bad/parts.py:6 in boom))" in lines["boom/seed=0"]
    assert "FAILED (TypeError: model 'dictmodel' (bad.parts:dictmodel) returned a dict, not a torch.nn.Module)" in lines["dict/seed=0"]
    assert ("FAILED (TypeError: schedule 'fast' (bad.parts:fast) returned a str, not a number (the factor of the learning "
            "rate))") in lines["fast/seed=0"]
    (error,) = out.stderr.strip().splitlines()
    assert error.startswith("error: 4 runs failed (first: nothing/seed=0: TypeError:") and "artifact traceback.txt" in error

    client = mlflow.MlflowClient(store)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("broken/smoke").experiment_id],
                                                          "tags.`suite.kind` = 'run'")}
    assert runs["ok/seed=0"].info.status == "FINISHED"
    boom = runs["boom/seed=0"]
    assert boom.info.status == "FAILED" and boom.data.tags["suite.error"] == lines["boom/seed=0"].split("FAILED (", 1)[1][:-1]
    trace = (plugin / "trace").mkdir() or client.download_artifacts(boom.info.run_id, "traceback.txt", str(plugin / "trace"))
    text = open(trace).read()
    assert text.startswith("Traceback") and 'bad/parts.py", line 6, in boom' in text and text.rstrip().endswith(
        "NameError: name 'undefined_name' is not defined")

    report = (plugin / "reports" / "smoke" / "broken" / "report.md").read_text()
    assert ("**Incomplete:** 4 runs of this study failed (first: `nothing/seed=0`: TypeError: augmentation 'nothing' "
            "(bad.parts:nothing) returned None") in report
    assert "| mnist | boom vs ok | n/a |" in report and "**inconclusive** (no seed finished on both sides)" in report
    assert "| boom > ok | mnist |" in report and "**inconclusive** (nothing finished to test)" in report

    again = suite(["study", "broken.yaml", "--smoke", "--executor", "serial", "--tracking-uri", store, "--reports-dir", "reports"],
                  plugin)
    assert again.returncode == 1 and "broken: 0 trained, 1 already done, 0 diverged, 4 failed" in again.stdout


@pytest.mark.slow
def test_a_plugin_on_pythonpath_is_recorded_with_a_hash_of_its_own_code(tmp_path):
    """Its tag says when its code changed, a constructor in a module of its own included; a record may hold lists."""
    (tmp_path / "mine.py").write_text('from suite.components import Component\nCOMPONENTS = [Component("dataset", "dots", '
                                      '"myparts:dots", "a few dots", task="classification", inputs=([2], 3))]\n')
    (tmp_path / "myparts.py").write_text("def dots(root):\n    return None\n")
    probe = ("from suite import components; components.load_plugins(['mine']); record = components.get('dataset', 'dots'); "
             "print(record.source)\ntry:\n    record.load()(None)\nexcept TypeError as err:\n    print(err)")

    def source():
        out = suite_python(probe, tmp_path)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    first, checked = source()
    assert re.fullmatch(r"mine \(not an installed package; source sha256 [0-9a-f]{12}\)", first), first
    assert checked == "dataset 'dots' (myparts:dots) returned None, not a suite.components.data.Raw"  # (lists: was unhashable)
    assert source()[0] == first  # the same code, the same hash
    (tmp_path / "myparts.py").write_text("def dots(root):\n    return None  # edited\n")
    assert source()[0] != first  # the constructor's module is the plug-in's own code too

    # a constructor whose package raises when imported is one line when the plug-in loads (was a traceback)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "__init__.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "mine.py").write_text((tmp_path / "mine.py").read_text().replace("myparts:dots", "broken.parts:dots"))
    out = suite_python(probe, tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().endswith("plug-in 'mine': dataset 'dots' is built by broken.parts:dots, whose package cannot be "
                                       "imported (RuntimeError: no GPU here)"), out.stderr


def suite_python(code, cwd):
    """`code` in a fresh interpreter with `cwd` and the suite importable; a ComponentError ends it in one line."""
    wrapped = f"import sys\nfrom suite.components import ComponentError\ntry:\n    exec({code!r})\nexcept ComponentError as err:\n" \
              "    sys.exit(f'error: {err}')\n"
    return run_python(["-c", wrapped], cwd, cwd)
