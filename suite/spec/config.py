"""Typed run configuration: what one training run is, validated once.

A `RunConfig` is the whole recipe of a run except its seed: data, model, optimizer and
training settings. It is frozen; `canonical()` is the JSON-ready dict that run keys hash
and MLflow params flatten. This module and the rest of `spec/` never import torch, so that a
study file can be validated in a fraction of a second.

Which names a study may use for a model, dataset, optimizer, schedule or augmentation comes from
the one registry, `suite.components` (built-ins and plug-ins); the classes below are the built-ins'
typed parameters, and a field naming a component is validated by its record's class.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt, SerializeAsAny,
                      TypeAdapter, ValidationError, model_validator)
from pydantic_core import PydanticCustomError

from .. import components

# Every metric a run records at the end, and which way is better.
METRIC_DIRECTIONS = {
    "test_acc": "max",
    "val_acc": "max",
    "train_acc": "max",
    "test_loss": "min",
    "val_loss": "min",
    "train_loss": "min",
    "test_mse": "min",
    "val_mse": "min",
    "epochs_trained": "min",
    "train_seconds": "min",
}
# Regression: the MSE is the loss. Study files may name it either way; runs log it once, under
# the loss's name (no duplicate series in MLflow), and results read it back under both.
METRIC_ALIASES = {"val_mse": "val_loss", "test_mse": "test_loss"}
# Metrics that only make sense for one kind of problem.
CLASSIFICATION_ONLY = {"test_acc", "val_acc", "train_acc"}
REGRESSION_ONLY = {"test_mse", "val_mse"}

Activation = Literal["relu", "tanh", "sigmoid", "gelu", "silu", "leaky_relu"]
Init = Literal["default", "kaiming", "xavier", "orthogonal"]  # weights' initialisation (models.init_weights)
Norm = Literal["none", "batch", "layer"]  # after each hidden linear / conv layer, before its activation


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ByName:
    """Validates a `{name: ..., ...}` block with the parameter class of the registry's record of that name.

    A plug-in's model, optimizer or schedule validates exactly as a built-in one does; the block
    keeps its record's class, so run configs and keys hold its fields like any other.
    """

    def __init__(self, kind: str, default: str | None = None):
        self.kind, self.default = kind, default

    def __call__(self, value: Any):
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping with a name (e.g. {{name: {components.names(self.kind)[0]}}})")
        name = value.get("name", self.default)
        allowed = components.names(self.kind)
        if not isinstance(name, str) or name not in allowed:
            raise PydanticCustomError("union_tag_invalid", "unknown or missing name {tag}",
                                      {"tag": str(name or ""), "expected_tags": ", ".join(allowed)})
        return components.get(self.kind, name).params.model_validate({**value, "name": name})


def by_name(kind: str, default: str | None = None):
    """The annotation of a field that names a component of `kind` (see ByName)."""
    return Annotated[SerializeAsAny[BaseModel], BeforeValidator(ByName(kind, default))]


class Augment(Strict):
    """Training-set augmentation, applied batch-wise on tensors; the test set is never augmented.

    Plug-in augmentations are further keys, `<name>: value`, validated by their record's type.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    rotation: float = Field(0.0, ge=0, le=180, description="random rotation by ±this many degrees")
    hflip: bool = False
    crop_pad: int = Field(0, ge=0, le=16, description="random crop after zero-padding by this many pixels")

    @model_validator(mode="before")
    @classmethod
    def _plugins(cls, value):
        if not isinstance(value, dict):
            return value
        out = dict(value)
        for key in set(value) - set(cls.model_fields):
            if key not in components.names("augmentation"):
                raise ValueError(f"unknown key '{key}' (allowed: {', '.join(components.names('augmentation'))})")
            try:
                out[key] = TypeAdapter(components.get("augmentation", key).params).validate_python(value[key])
            except ValidationError as err:  # (raised here, its location would be the block's: name the key)
                raise ValueError(f"{key}: {err.errors()[0]['msg']}") from None
        return out

    def active(self) -> list[tuple[str, Any]]:
        """(name, value) of each augmentation switched on, in the order they apply: built-ins, then plug-ins by name."""
        extra = self.model_extra or {}
        return [(k, getattr(self, k)) for k in type(self).model_fields if getattr(self, k)] + \
               [(k, extra[k]) for k in sorted(extra) if extra[k]]


class DataConfig(Strict):
    name: str = "mnist"
    val_size: int = Field(5000, ge=1, description="images carved from the training set for validation")
    train_size: PositiveInt | None = Field(None, description="use only the first N remaining training images")
    train_fraction: float | None = Field(None, gt=0, le=1, description="then use only this share of them (the first ones: a 10% "
                                                                        "subset lies inside the 50% one); null: all")
    test_size: PositiveInt | None = Field(None, description="evaluate on only the first N test images")
    augment: Augment = Augment()
    label_noise: float = Field(0.0, ge=0, lt=1, description="share of training labels flipped at random to another class "
                                                            "(seeded by the run's seed, nested across levels); validation and test stay clean")

    @model_validator(mode="after")
    def _known(self):
        components.get("dataset", self.name)  # unknown: lists the datasets
        return self


class MLP(Strict):
    name: Literal["mlp"]
    hidden: list[PositiveInt] = Field(default_factory=lambda: [256])
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    dropout_layers: list[int] | None = Field(None, description="hidden layers (0-based; -1 the last) followed by dropout; all when null")
    norm: Norm = "none"
    init: Init = "default"

    @model_validator(mode="after")
    def _layers_exist(self):
        for i in self.dropout_layers or []:
            if not -len(self.hidden) <= i < len(self.hidden):
                raise ValueError(f"dropout_layers: layer {i} does not exist (the MLP has {len(self.hidden)} hidden layers)")
        return self


class CNN(Strict):
    name: Literal["cnn"]
    channels: list[PositiveInt] = Field(default_factory=lambda: [6, 12])
    kernel_size: PositiveInt = 3
    padding: int = Field(0, ge=0)
    pool: int = Field(0, ge=0, description="max-pool size after each conv; 0 for none")
    hidden: list[PositiveInt] = Field(default_factory=list, description="linear layers after the convolutions")
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    norm: Norm = Field("none", description="batch: BatchNorm after each conv and hidden linear layer; layer: LayerNorm "
                                           "(GroupNorm with one group after a conv)")
    init: Init = "default"


class ResNet(Strict):
    """He et al.'s CIFAR ResNet: a 3x3 stem, three stages of (depth - 2) / 6 basic blocks at width, 2x and 4x width
    (stride 2 into stages 2 and 3, 1x1 projection shortcuts there), global average pooling, one linear layer."""

    name: Literal["resnet"]
    depth: Literal[8, 14, 20, 32, 44, 56] = Field(20, description="layers: 6n + 2 (ResNet-8 has one block per stage)")
    width: PositiveInt = Field(16, description="channels of the first stage (then 2x and 4x)")
    norm: Norm = Field("batch", description="after each convolution")
    activation: Activation = "relu"
    init: Init = "default"


Model = by_name("model")


class SGD(Strict):
    name: Literal["sgd"]
    lr: PositiveFloat
    weight_decay: NonNegativeFloat = 0.0


class Momentum(Strict):
    """SGD with (heavy-ball or Nesterov) momentum."""

    name: Literal["momentum"]
    lr: PositiveFloat
    momentum: float = Field(0.9, gt=0, lt=1)
    dampening: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def _nesterov(self):
        if self.nesterov and self.dampening:
            raise ValueError("nesterov momentum requires dampening 0")
        return self


class RMSprop(Strict):
    name: Literal["rmsprop"]
    lr: PositiveFloat
    alpha: float = Field(0.99, gt=0, lt=1)
    eps: PositiveFloat = 1e-8
    momentum: float = Field(0.0, ge=0, lt=1)
    centered: bool = False
    weight_decay: NonNegativeFloat = 0.0


Beta = Annotated[float, Field(ge=0, lt=1)]


class Adam(Strict):
    name: Literal["adam"]
    lr: PositiveFloat
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = Field(0.0, description="coupled L2: added to the gradient")
    amsgrad: bool = False


class AdamW(Strict):
    name: Literal["adamw"]
    lr: PositiveFloat
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = Field(0.01, description="decoupled weight decay")
    amsgrad: bool = False


class Adagrad(Strict):
    name: Literal["adagrad"]
    lr: PositiveFloat
    lr_decay: NonNegativeFloat = 0.0
    initial_accumulator_value: NonNegativeFloat = 0.0
    eps: PositiveFloat = 1e-10
    weight_decay: NonNegativeFloat = 0.0


class NAdam(Strict):
    name: Literal["nadam"]
    lr: PositiveFloat
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    momentum_decay: NonNegativeFloat = 0.004
    weight_decay: NonNegativeFloat = 0.0
    decoupled_weight_decay: bool = False


class RAdam(Strict):
    name: Literal["radam"]
    lr: PositiveFloat
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0
    decoupled_weight_decay: bool = False


class Adadelta(Strict):
    name: Literal["adadelta"]
    lr: PositiveFloat = 1.0
    rho: float = Field(0.9, gt=0, lt=1)
    eps: PositiveFloat = 1e-6
    weight_decay: NonNegativeFloat = 0.0


Optimizer = by_name("optimizer")


class Schedule(Strict):
    """The learning rate over training, as a factor of `optimizer.lr`, set before every step (t of T steps)."""

    name: Literal["constant", "step", "cosine", "warmup_cosine", "one_cycle"] = "constant"
    step_every: PositiveInt = Field(1, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="step: factor applied at each decay")
    warmup: float = Field(0.05, ge=0, lt=1, description="warmup_cosine: share of the steps spent warming up linearly from 0")
    peak_at: float = Field(0.3, gt=0, lt=1, description="one_cycle: share of the steps at which the factor reaches 1")
    start_factor: float = Field(0.04, gt=0, le=1, description="one_cycle: the factor at the first step")
    min_factor: float = Field(0.0, ge=0, le=1, description="cosine, warmup_cosine, one_cycle: the factor at the end")


ScheduleBlock = by_name("schedule", "constant")  # a built-in (config.Schedule) or a plug-in's schedule


class TrainConfig(Strict):
    batch_size: PositiveInt | Literal["full"] = 64
    epochs: PositiveInt = 1
    patience: PositiveInt | None = Field(None, description="early stopping: epochs without improvement; null trains all epochs")
    monitor: Literal["val_acc", "val_loss"] = "val_acc"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    schedule: ScheduleBlock = Schedule()
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="classification: cross-entropy against smoothed targets")
    clip_norm: PositiveFloat | None = Field(None, description="clip the gradient's global norm to this before each step")
    decay: Literal["all", "weights"] = Field("all", description="weights: biases and norm parameters get no weight decay")


class Execution(Strict):
    """How a run is computed, not what it is: set by the executor (`--device`, `--threads`, `--pack`), except
    `fused_optimizer`, which a study may also fix for all its runs (`base.execution`, see StudyExecution).

    Each changes a run's numbers (CUDA kernels; the order of floating-point sums over threads; a
    fused optimizer step rounds differently), so each is part of the resolved config and enters
    its run key, except at its legacy value.
    """

    device: Literal["cpu", "cuda"] = "cpu"
    threads: PositiveInt = Field(1, description="torch intra-op threads of the process that trains the run")
    fused_optimizer: bool = Field(False, description="PyTorch's fused optimizer kernel (sgd, momentum, adam, adamw): "
                                                     "3x faster steps on a CPU, last-bit different numbers")
    packed: bool = Field(False, description="trained as a member of a packed model (suite.execute.packed): batched matmuls and "
                                            "one optimizer step over the stacked members, last-bit different numbers")


class StudyExecution(Strict):
    """The part of `execution` a study file may set, in `base` only: every run of a study is computed alike."""

    fused_optimizer: bool = Field(False, description="train every run with PyTorch's fused optimizer kernel (sgd, momentum, adam, "
                                                     "adamw; the others ignore it): faster steps, last-bit different numbers "
                                                     "than the default kernel, so other run keys; `--fused-optimizer` sets it "
                                                     "for one call")


# Optimizers that PyTorch has a fused kernel for (on the CPU and CUDA); for the others the flag is dropped.
FUSED_OPTIMIZERS = {"sgd", "momentum", "adam", "adamw"}

# Fields added after the first runs were recorded, at the value that reproduces the behaviour
# before they existed. A field at its legacy value stays out of the run key (study.run_key), so
# adding a field never changes the key of a run already in a store or a committed report.
LEGACY = {
    "execution": {"device": "cpu", "threads": 1, "fused_optimizer": False, "packed": False},
    "data": {"label_noise": 0.0, "train_fraction": None},
    "model": {"norm": "none", "init": "default"},
    "optimizer": {"dampening": 0.0, "centered": False, "amsgrad": False},
    "train": {"label_smoothing": 0.0, "clip_norm": None, "decay": "all",
              "schedule": {"name": "constant", "step_every": 1, "gamma": 0.1, "warmup": 0.05, "peak_at": 0.3,
                           "start_factor": 0.04, "min_factor": 0.0}},
}

# Packing (`--pack`): runs of one MLP architecture, data and schedule train together as one batched
# model (suite/execute/packed.py); members may differ in these fields (and their seed), not in any other.
PACKED_OPTIMIZERS = {"sgd", "momentum", "adam", "adamw"}
PER_MEMBER = ("optimizer.lr", "optimizer.weight_decay", "model.dropout", "data.augment", "data.label_noise", "train.patience",
              "train.label_smoothing")


def packable(config: "RunConfig") -> bool:
    """Whether `suite.execute.packed` can train this run: an MLP with an optimizer it implements over stacked members."""
    opt = config.optimizer
    return (config.model.name == "mlp" and config.model.norm == "none" and opt.name in PACKED_OPTIMIZERS
            and not config.data.augment.model_extra
            and not getattr(opt, "amsgrad", False) and not getattr(opt, "dampening", 0.0))


def pack_group(config: "RunConfig") -> str:
    """Runs with equal values here can share one packed model: the resolved config less the per-member fields."""
    import json

    tree = config.canonical()
    for path in PER_MEMBER:
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    return json.dumps(tree, sort_keys=True)


class RunConfig(Strict):
    data: DataConfig = DataConfig()
    model: Model = MLP(name="mlp")
    optimizer: Optimizer = Adam(name="adam", lr=1e-3)
    train: TrainConfig = TrainConfig()
    execution: Execution = Execution()

    @model_validator(mode="before")
    @classmethod
    def _unnamed_blocks_refine_the_defaults(cls, data):
        """A model or optimizer block without a name adjusts the default one (`optimizer: {lr: 0.1}`: Adam at 0.1),
        as a file that writes no block at all gets it; it was refused for its missing name."""
        if isinstance(data, dict):
            for field in ("model", "optimizer"):
                block = data.get(field)
                if isinstance(block, dict) and "name" not in block:
                    data = {**data, field: {**cls.model_fields[field].default.model_dump(mode="json"), **block}}
        return data

    @model_validator(mode="after")
    def _fits_task(self):
        if self.task == "regression" and self.train.monitor == "val_acc" and self.train.patience:
            raise ValueError("train.patience: early stopping watches train.monitor, val_acc (the default), which has no meaning for "
                             "a regression dataset; set train.monitor: val_loss")
        if self.task == "regression" and (self.data.label_noise or self.train.label_smoothing):
            key = "data.label_noise" if self.data.label_noise else "train.label_smoothing"
            raise ValueError(f"{key}: needs class labels; {self.data.name} is a regression dataset")
        inputs = components.get("dataset", self.data.name).inputs  # (a plug-in dataset may not say)
        if inputs is not None and len(inputs[0]) != 3:  # not images (C x H x W): what was found when every run failed
            shape = "x".join(map(str, inputs[0]))
            if self.model.name in ("cnn", "resnet"):
                raise ValueError(f"model.name: {self.model.name} needs image inputs (C x H x W); {self.data.name}'s are of shape {shape}")
            if on := [k for k in ("rotation", "hflip", "crop_pad") if getattr(self.data.augment, k)]:
                raise ValueError(f"data.augment.{on[0]}: an image augmentation; {self.data.name}'s inputs are of shape {shape}")
        return self

    @property
    def task(self) -> str:
        return task_of(self.data.name)

    def canonical(self) -> dict:
        """The JSON-ready resolved config: every field, defaults included."""
        return self.model_dump(mode="json")

    def key_view(self) -> dict:
        """`canonical()` less the fields that sit at their legacy value (what run keys hash)."""
        return _drop_legacy(self.canonical(), LEGACY)


def task_of(dataset: str) -> str:
    """"classification" or "regression": what kind of problem a dataset is (its registry record says)."""
    return components.get("dataset", dataset).task


def _drop_legacy(tree: dict, legacy: dict) -> dict:
    out = {}
    for key, value in tree.items():
        if key not in legacy:
            out[key] = value
        elif isinstance(legacy[key], dict):
            kept = _drop_legacy(value, legacy[key])
            if kept:
                out[key] = kept
        elif value != legacy[key]:
            out[key] = value
    return out


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat
