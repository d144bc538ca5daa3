"""The reference of every study-file field, generated from the typed schema (`suite schema`).

    .venv/bin/suite schema > docs/study-reference.md

One table per block: field, type and allowed values, default, meaning. The committed
docs/study-reference.md is checked against this output by tests/test_language.py, so the
reference cannot drift from the code. Imports no torch.
"""

from __future__ import annotations

import json
import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .. import components
from . import config
from .study import Param, Search, Smoke, StudyFile

# (heading, model, what the section is) in the order a study file reads
SECTIONS = [
    ("Study file (top level)", StudyFile, "The keys of a study YAML file."),
    ("smoke", Smoke, "How `--smoke` shrinks the study to seconds."),
    ("search / tune", Search, "An Optuna search over one variant (`search`), or every variant's tuning budget (`tune`)."),
    ("search.space.<path>", Param, "One searched hyperparameter."),
    ("data", config.DataConfig, "`base.data`, a variant's or a dataset's `data` (the dataset itself is the top-level `datasets`)."),
    ("data.augment", config.Augment, "Training-set augmentation, batch-wise on tensors."),
    *((f"{c.kind}: {c.name}", c.params, f"`{c.kind}: {{name: {c.name}, ...}}`: {c.doc}")
      for kind in ("model", "optimizer") for c in components.records(kind) if c.source == components.BUILTIN),
    ("train", config.TrainConfig, "How a run trains."),
    ("train.schedule", config.Schedule, "The learning rate over training, as a factor of `optimizer.lr`."),
    ("execution", config.StudyExecution, "`base.execution` only: how every run of the study is computed, where the study fixes "
                                         "it. Device, threads and packing are chosen when running (`--device`, `--threads`, "
                                         "`--pack`)."),
]


# One-line meanings of fields whose schema carries no description: by "Model.field", else by field name.
MEANINGS = {
    "StudyFile.name": "the study's name: its reports folder and MLflow experiment; letters, digits, _ . + -",
    "StudyFile.question": "what the study asks, in one sentence (reports and the UI show it)",
    "StudyFile.description": "longer text for the report and the experiment's description",
    "StudyFile.base": "a run config (the sections below), the part every variant shares",
    "StudyFile.variants": "variant name -> partial run config deep-merged over base",
    "StudyFile.seeds": "a count (seeds 0..n-1) or a list of seeds; each variant trains once per seed",
    "StudyFile.datasets": "dataset names (mnist, fashion_mnist, cifar10, quadratic), or name -> partial config for that dataset",
    "StudyFile.metric": "the final metric compared, one of " + ", ".join(config.METRIC_DIRECTIONS) + " (its direction is known)",
    "StudyFile.baseline": "the variant every other one is compared with, paired by seed",
    "StudyFile.claims": "expected outcomes the report judges, e.g. `l2 > none on test_acc`",
    "StudyFile.smoke": "how --smoke shrinks the study",
    "StudyFile.search": "an Optuna search (`make tune`)",
    "Smoke.seeds": "seeds in smoke mode",
    "Smoke.epochs": "epochs in smoke mode (never more than the full study's; null: leave alone)",
    "Smoke.train_size": "training images in smoke mode (never more than the full study's; null: leave alone)",
    "Smoke.val_size": "validation images in smoke mode (never more than the full study's; null: leave alone)",
    "Smoke.test_size": "test images in smoke mode (never more than the full study's; null: leave alone)",
    "Search.objective": "the validation metric the search optimises (never the test split)",
    "Search.space": "dotted config path -> the range or choices searched",
    "Search.trials": "trials to run (a resumed search counts the finished ones)",
    "Search.sampler": "Optuna's sampler: TPE, random or quasi-Monte-Carlo",
    "Search.pruner": "stop trials whose validation curve falls below the median",
    "Param.type": "float or int range, or categorical choices",
    "Param.low": "lower end of a float or int range",
    "Param.high": "upper end of a float or int range",
    "Param.log": "sample the range log-uniformly",
    "DataConfig.name": "the dataset (set by the top-level `datasets`, not here)",
    "DataConfig.augment": "training-set augmentation (below)",
    "Augment.hflip": "flip half the training images horizontally",
    "MLP.name": "a multi-layer perceptron",
    "CNN.name": "a small convolutional network",
    "ResNet.name": "He et al.'s CIFAR ResNet (basic blocks, projection shortcuts)",
    "hidden": "widths of the hidden linear layers",
    "activation": "the nonlinearity after each hidden layer",
    "dropout": "dropout rate after the hidden layers (0: none)",
    "norm": "none, or batch / layer norm after each hidden layer, before its activation",
    "init": "weight initialisation: PyTorch's default, kaiming (normal, ReLU gain), xavier (uniform) or orthogonal",
    "channels": "output channels of each convolution",
    "kernel_size": "convolution kernel size",
    "padding": "zero padding of each convolution",
    "lr": "learning rate (a schedule multiplies it step by step)",
    "weight_decay": "L2 penalty added to the gradient (decoupled for adamw, or with decoupled_weight_decay)",
    "momentum": "momentum factor",
    "dampening": "dampening of the momentum buffer",
    "nesterov": "Nesterov momentum",
    "alpha": "smoothing constant of the squared-gradient average",
    "eps": "term added to the denominator for numerical stability",
    "centered": "normalise by the gradient's estimated variance instead of its second moment",
    "betas": "decay rates of the first and second moment averages",
    "amsgrad": "use the maximum of past second moments (AMSGrad)",
    "lr_decay": "learning-rate decay per step",
    "initial_accumulator_value": "starting value of the squared-gradient sums",
    "momentum_decay": "NAdam's momentum decay",
    "decoupled_weight_decay": "apply weight decay to the weights directly (AdamW-style)",
    "rho": "decay rate of the running averages",
    "TrainConfig.batch_size": "examples per step, or `full` for full-batch training",
    "TrainConfig.epochs": "passes over the training split",
    "TrainConfig.monitor": "the validation metric early stopping and the best epoch follow",
    "TrainConfig.device": "auto: as the call says (--device, default: CUDA when present); cpu or cuda here fixes it for these "
                          "runs, whatever --device says",
    "TrainConfig.schedule": "the learning-rate schedule (below)",
    "Schedule.name": "constant, step, cosine, warmup_cosine or one_cycle",
    "name": "which optimizer (torch.optim's of that name; momentum is SGD with momentum)",
}


def meaning(model, name: str, field) -> str:
    return field.description or MEANINGS.get(f"{model.__name__}.{name}") or MEANINGS.get(name, "")


def type_name(annotation) -> str:
    """A field's type in words a study author reads: `relu | tanh`, `list of int`, `number or null`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(type_name(a) for a in args))
    if origin is list:  # (a list of a union in brackets: `list of (integer or null) or null`)
        inner = type_name(args[0])
        return f"list of ({inner})" if typing.get_origin(args[0]) in (typing.Union, types.UnionType) else f"list of {inner}"
    if origin is tuple:
        return "pair of " + type_name(args[0]) if len(args) == 2 and args[0] == args[1] else f"tuple of {', '.join(map(type_name, args))}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (below)"
    names = {int: "integer", float: "number", bool: "true/false", str: "text", type(None): "null", dict: "mapping", list: "list"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def bounds(field) -> str:
    """The numeric constraints of a field: `>= 0, < 1`."""
    marks = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >="}
    annotation = field.annotation
    # the field's own constraints, its type's (PositiveInt), and those of a union's members (PositiveFloat | None)
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    metadata = [*field.metadata, *(m for arg in (*members, annotation) for m in getattr(arg, "__metadata__", ()))]
    found = [f"{sign} {getattr(meta, name)}" for meta in metadata for name, sign in marks.items()
             if getattr(meta, name, None) is not None]
    return ", ".join(found)


def default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(below)"
    return f"`{json.dumps(value)}`"


def table(model: type[BaseModel]) -> list[str]:
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = type_name(field.annotation)
        limits = bounds(field)
        legacy = _legacy(model, name)
        text = meaning(model, name, field).replace("|", "\\|")
        if legacy:
            text += f" (added later; at `{json.dumps(legacy[0])}` it leaves run keys unchanged)"
        rows.append(f"| `{name}` | {kind}{f' ({limits})' if limits else ''} | {default(field)} | {text} |")
    return rows


def _legacy(model, name: str) -> tuple | None:
    """(legacy value,) of a field added after the first runs were recorded (config.LEGACY), else None."""
    section = {config.DataConfig: "data", config.TrainConfig: "train", config.MLP: "model", config.CNN: "model"}.get(model)
    if section is None and any(c.params is model for c in components.records("optimizer")):
        section = "optimizer"
    legacy = config.LEGACY.get(section, {}) if section else {}
    return (legacy[name],) if name in legacy and not isinstance(legacy[name], dict) else None


def reference() -> str:
    """The whole reference, as markdown."""
    lines = ["# Study file reference", "",
             "Generated from the schema by `suite schema` (`.venv/bin/suite schema > docs/study-reference.md`); "
             "a test checks that this file matches the code. The README's \"Study files\" explains how the parts fit.", ""]
    for heading, model, text in SECTIONS:
        lines += [f"## {heading}", "", text, "", *table(model), ""]
    lines += ["## Components", "",
              "Every name a study can use, from the one registry (`suite.components`). A plug-in adds its own: a module with a "
              "`COMPONENTS` list, registered through the entry-point group `suite.components` or listed under `plugins:` "
              "(README, \"Plug-ins\").", "", "| kind | name | what it is |", "|---|---|---|"]
    lines += [f"| {c.kind} | `{c.name}` | {c.doc} |" for kind in components.KINDS for c in components.records(kind)
              if c.source == components.BUILTIN]
    return "\n".join(lines) + "\n"
