"""The names the typed config accepts (config.py, no torch) and the registries that build them stay in step."""

import typing

import pytest
import torch

from suite import config, data, models, train

from conftest import DATA_DIR, has_dataset


def _names(union) -> set[str]:
    members = typing.get_args(typing.get_args(union)[0])  # Annotated[Union[...], Field] -> the union's members
    return {typing.get_args(m.model_fields["name"].annotation)[0] for m in members}


def test_datasets_in_config_are_the_loaders():
    assert set(config.DATASET_TASKS) == set(data.DATASETS)


def test_input_shapes_known_for_every_dataset():
    assert set(data.INPUTS) == set(data.DATASETS)


@pytest.mark.parametrize("name", sorted(data.INPUTS))
def test_input_shapes_are_what_the_loaded_data_gives(name):
    if not has_dataset(name):
        pytest.skip(f"{name} not found under {DATA_DIR}")
    cfg = config.DataConfig(name=name, val_size=100, train_size=100, test_size=100)
    splits = data.load_splits(cfg, DATA_DIR, torch.device("cpu"))
    assert (splits.in_shape, splits.num_outputs) == data.INPUTS[name]


def test_models_in_config_are_the_builders():
    assert _names(config.Model) == set(models.MODELS)


def test_optimizers_in_config_are_the_constructors():
    assert _names(config.Optimizer) == set(train.OPTIMIZERS)


def test_a_sampler_for_every_allowed_name():
    from suite import study, tune

    allowed = set(typing.get_args(study.Search.model_fields["sampler"].annotation))
    assert allowed == set(tune.SAMPLERS)
