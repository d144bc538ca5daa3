"""The one component registry (suite.components): every record builds, validates and names what it says."""

import typing

import pytest
import torch

from suite import components
from suite.spec import config

from conftest import DATA_DIR, IN_CI, has_dataset

ALL = [c for kind in components.KINDS for c in components.records(kind)]


@pytest.mark.parametrize("record", ALL, ids=lambda c: f"{c.kind}:{c.name}")
def test_every_record_loads_its_constructor_and_documents_itself(record):
    assert callable(record.load()) and record.doc and "\n" not in record.doc
    assert record.source == components.BUILTIN


@pytest.mark.parametrize("record", [c for c in ALL if c.kind in ("model", "optimizer", "schedule")], ids=lambda c: f"{c.kind}:{c.name}")
def test_a_named_record_validates_its_name_with_its_own_class(record):
    assert record.name in typing.get_args(record.params.model_fields["name"].annotation)
    section = {"model": "model", "optimizer": "optimizer", "schedule": "train"}[record.kind]
    block = {"name": record.name, **({"lr": 0.1} if record.kind == "optimizer" else {})}
    cfg = config.RunConfig.model_validate({section: {"schedule": block} if record.kind == "schedule" else block})
    validated = cfg.train.schedule if record.kind == "schedule" else getattr(cfg, section)
    assert type(validated) is record.params


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown optimizer 'adamm' \\(allowed: sgd, momentum, rmsprop, adam, adamw"):
        components.get("optimizer", "adamm")
    assert components.names("augmentation") == list(config.Augment.model_fields)  # built-ins apply in the field order


@pytest.mark.parametrize("name", components.names("dataset"))
def test_input_shapes_are_what_the_loaded_data_gives(name):
    if not has_dataset(name) and not IN_CI:
        pytest.skip(f"{name} not found under {DATA_DIR}")
    cfg = config.DataConfig(name=name, val_size=100, train_size=100, test_size=100)
    from suite.components import data

    splits = data.load_splits(cfg, DATA_DIR, torch.device("cpu"))
    record = components.get("dataset", name)
    assert (splits.in_shape, splits.num_outputs) == record.inputs and splits.task == record.task


def test_a_sampler_for_every_allowed_name():
    from suite import tune
    from suite.spec import study

    allowed = set(typing.get_args(study.Search.model_fields["sampler"].annotation))
    assert allowed == set(tune.SAMPLERS)


def test_reports_name_the_classes_of_datasets_whose_records_name_them():
    assert components.class_name("cifar10", 3) == "cat" and components.class_name("fashion_mnist", 9) == "ankle boot"
    assert components.class_name("mnist", 3) == "3" and components.class_name("nosuchdata", 3) == "3"  # (a label, as it was)
    for name in components.names("dataset"):
        record = components.get("dataset", name)
        assert record.classes is None or len(record.classes) == record.inputs[1], name  # one name per output class
