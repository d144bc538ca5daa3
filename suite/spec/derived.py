"""The runs a study implies beyond its file's own: its smoke version (`--smoke`) and its tuned variants.

`smoke_config` shrinks a run's epochs and data (rank-preserving where variants differ in them);
`with_tuned` adds a `<variant>@tuned` condition per tuned variant; the `search_*` and `tuning_*`
functions name and fingerprint the searches (`search:` and `tune:` blocks) that find those values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING

from .. import components
from ..errors import StudyError
from .config import Execution, RunConfig
from .grid import deep_merge, nest, without
from .messages import shown

if TYPE_CHECKING:
    from .study import Search, Study


SHRUNK = {"train.epochs": "epochs", "data.train_size": "train_size", "data.val_size": "val_size", "data.test_size": "test_size"}


def smoke_scale(study: Study) -> dict[str, dict]:
    """What `--smoke` turns each value of a field it shrinks into, over every config of the study.

    One value: the smoke block's, never more than the full study's (a study of 300 training images keeps 300). Several (a variant or grid
    axis sets the field): mapped rank-preservingly, so distinct values stay distinct and ordered and
    the study keeps its axis: the i-th of k values gets about (i+1)/k of the smoke value, never more
    than it had, and at least one more than the value below it (null, the whole split, ranks last).
    """
    scale = {}
    for path, key in SHRUNK.items():
        cap = getattr(study.smoke, key)
        if cap is None:
            continue
        section, field_name = path.split(".")
        values = sorted({getattr(getattr(c, section), field_name) for c in study.configs.values()}, key=lambda v: (v is None, v or 0))
        if len(values) == 1:
            scale[path] = {values[0]: cap if values[0] is None else min(cap, values[0])}  # (null: the whole split)
            continue
        mapped, previous = {}, 0
        for i, value in enumerate(values):
            target = max(-(-cap * (i + 1) // len(values)), previous + 1)
            mapped[value] = previous = target if value is None else min(value, target)
        scale[path] = mapped
    return scale


def smoke_config(config: RunConfig, scale: dict[str, dict]) -> RunConfig:
    """The shrunken config `--smoke` runs: fewer epochs, smaller subsets (`scale` from `smoke_scale`).

    A step schedule shrinks with the epochs (decays every 5 of 15 epochs: every 1 of 2 in smoke), so
    that a smoke run still decays when its full run does.
    """
    updates: dict = {"data": {}, "train": {}}
    for path, mapped in scale.items():
        section, field_name = path.split(".")
        updates[section][field_name] = mapped[getattr(getattr(config, section), field_name)]
    total = components.get("dataset", config.data.name).train_split  # a smoke size beyond what the split holds beside
    train = updates["data"].get("train_size")                         # its validation set: the split's rest (those runs
    if total is not None and train is not None:                       # failed one by one)
        updates["data"]["train_size"] = min(train, total - updates["data"].get("val_size", config.data.val_size))
    schedule, epochs = config.train.schedule, updates["train"].get("epochs", config.train.epochs)
    if schedule.name == "step" and epochs < config.train.epochs and schedule.step_every < config.train.epochs:
        every = max(1, schedule.step_every * epochs // config.train.epochs)
        updates["train"]["schedule"] = schedule.model_copy(update={"step_every": every})
    return config.model_copy(update={
        "data": config.data.model_copy(update=updates["data"]),
        "train": config.train.model_copy(update=updates["train"]),
    })


TUNED = "@tuned"  # suffix of a variant trained at its tuned settings


def override(config: RunConfig, values: dict) -> RunConfig:
    """`config` with {dotted path: value} set (and validated again)."""
    tree = config.canonical()
    for path, value in values.items():
        tree = deep_merge(tree, nest(path, value))
    return RunConfig(**tree)


def with_tuned(study: Study, tuned: dict) -> Study:
    """The study plus a `<variant>@tuned` condition for every (dataset, variant) with tuned values.

    A variant gets its tuned condition only when every dataset of the study has tuned values
    for it, so the tuned conditions cover the same datasets as the rest.
    """
    ready = [v for v in study.variants if all((d, v) in tuned for d in study.datasets)]
    configs = dict(study.configs)
    for dataset in study.datasets:
        seen = {json.dumps(c.canonical(), sort_keys=True): v for (d, v), c in study.configs.items() if d == dataset}
        for variant in ready:
            configs[dataset, variant + TUNED] = override(study.configs[dataset, variant], tuned[dataset, variant])
            canon = json.dumps(configs[dataset, variant + TUNED].canonical(), sort_keys=True)
            if canon in seen:  # the same run keys: their runs would collide
                values = ", ".join(f"{path} = {shown(value)}" for path, value in tuned[dataset, variant].items())
                raise StudyError(f"{study.path}: tuning '{variant}' on {dataset} found {values}, which makes "
                                 f"'{variant}{TUNED}' the same config as '{seen[canon]}'; change tune.space (or that variant) "
                                 f"so that tuning cannot land on it")
            seen[canon] = variant + TUNED
    points = {**study.points, **{v + TUNED: study.points[v] for v in ready}}
    return dataclasses.replace(study, variants=study.variants + tuple(v + TUNED for v in ready), configs=configs, points=points)


def tuning_budget(study: Study, smoke: bool) -> int:
    """Trials each variant's tuning (a `tune` block) gets."""
    return study.smoke.trials if smoke else study.tune.trials


def tuning_name(study: Study, variant: str, smoke: bool, dataset: str) -> str:
    """The name of the search that tunes `variant` of a study with a `tune` block on `dataset` (Optuna study, MLflow tag
    `suite.search`); the dataset is named when the study has several (each dataset is searched on its own)."""
    return f"{study.name}/{variant}" + (f"/{dataset}" if len(study.datasets) > 1 else "") + ("/smoke" if smoke else "")


def tuning_targets(study: Study) -> list[tuple[str, str]]:
    """(dataset, variant) pairs a `tune` block tunes: every variant on every dataset, `@tuned` ones excepted."""
    return [(d, v) for d in study.datasets for v in study.variants if not v.endswith(TUNED)]


def search_variant(block: Search, baseline: str | None, variants) -> str:
    """The variant a search block searches around: its own `variant`, else the baseline, else the first."""
    return block.variant or baseline or variants[0]


def search_base(study: Study, variant: str, dataset: str, smoke: bool) -> RunConfig:
    """The config a search's trials start from: the variant's on the dataset (shrunk in smoke mode), before the space sets its paths."""
    config = study.configs[dataset, variant]
    return smoke_config(config, smoke_scale(study)) if smoke else config


def search_fingerprint(study: Study, block: Search, variant: str, dataset: str, smoke: bool,
                       execution: Execution | None = None) -> str:
    """What a search's trials are a function of, hashed: the config they start from, less the paths the space sets
    and the fields at their legacy value (as in run keys), the block's space, objective, sampler, pruner and seed, and
    how the call computes its trials (`execution`: device, threads, packed, fused) where that differs from the default,
    1 CPU thread (so a search run the default way keeps the fingerprint it had before this entered it). As the call
    asks, not as the base config resolves it: a sampled optimizer or norm can make a trial packable or fused that the
    base is not, so a search on a model that never packs is kept apart under --pack too (searched again, never mixed).
    Not the trial budget, which a rerun may raise. A search keeps only trials of one fingerprint (`tune.placed`)."""
    tree = without(search_base(study, variant, dataset, smoke).key_view(), block.space)  # base values no trial sees
    what = {"config": tree, "space": {path: p.model_dump(mode="json", exclude_defaults=True) for path, p in block.space.items()},
            "objective": block.objective, "sampler": block.sampler, "pruner": block.pruner, "seed": block.seed}
    if execution is not None:
        asked, plain = execution.model_dump(mode="json"), Execution().model_dump(mode="json")
        changed = {k: v for k, v in asked.items() if plain.get(k) != v}
        if changed:
            what["execution"] = changed
    return hashlib.sha256(json.dumps(what, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
