"""The names the typed config accepts (config.py, no torch) and the registries that build them stay in step."""

import typing

from suite import config, data, models, train


def _names(union) -> set[str]:
    members = typing.get_args(typing.get_args(union)[0])  # Annotated[Union[...], Field] -> the union's members
    return {typing.get_args(m.model_fields["name"].annotation)[0] for m in members}


def test_datasets_in_config_are_the_loaders():
    assert set(config.DATASET_TASKS) == set(data.DATASETS)


def test_models_in_config_are_the_builders():
    assert _names(config.Model) == set(models.MODELS)


def test_optimizers_in_config_are_the_constructors():
    assert _names(config.Optimizer) == set(train.OPTIMIZERS)


def test_a_sampler_for_every_allowed_name():
    from suite import study, tune

    allowed = set(typing.get_args(study.Search.model_fields["sampler"].annotation))
    assert allowed == set(tune.SAMPLERS)
