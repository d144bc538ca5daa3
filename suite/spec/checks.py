"""What a study file must be beyond its types: bounded, plain YAML; runs, seeds, models and data that fit.

Each `check_*` takes `fail(message)`, which raises the file's one-line StudyError; the bounds sit
far above any real study, so that a bad file is refused in a fraction of a second instead of
filling the memory or training a model no machine holds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING
import re

import yaml
from pydantic import ValidationError

from .. import components
from .config import CLASSIFICATION_ONLY, REGRESSION_ONLY, RunConfig, StudyExecution, task_of
from .derived import search_variant
from .grid import deep_merge, nest, value_at
from .messages import describe, shown

if TYPE_CHECKING:
    from .study import Search, StudyFile


# Study and variant names become folders (reports/<study>/, search/<variant>/): never '.', '..' or hidden.
NAME_PATTERN = r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*$"
MAX_NAME = 100

# Bounds on what validation reads and builds, far above any real study, so that a bad file is
# refused in a fraction of a second instead of filling the memory.
MAX_FILE_BYTES = 1_000_000
MAX_VALUES = 100_000  # values in the file once aliases are expanded (a YAML bomb expands to billions)
MAX_DEPTH = 30
MAX_NUMBER = 2**63  # no setting takes a number this large (nor a NaN or an infinity)
NOT_A_NUMBER = "is not a number any setting takes (finite, below 2**63 in size)"
MAX_RUNS = 100_000
MAX_SEED = 2**32 - 1  # what every seeded generator (Optuna's samplers, NumPy) takes
MAX_MODEL_BYTES = 32 * 2**30  # float32 weights, gradients and two optimizer moments, plus a batch's activations
MAX_TRAIN = 60_000  # the largest training split (MNIST, Fashion-MNIST)


def check_name(what: str, name: str) -> None:
    """A study or variant name names a folder: plain, not '.', '..' or hidden, and not too long."""
    if not re.fullmatch(NAME_PATTERN, name) or len(name) > MAX_NAME:
        raise ValueError(f"{what} may only use ASCII letters (a-z, A-Z), digits and _ . + -, may not start with a dot "
                         f"and has at most {MAX_NAME} characters")


class UniqueKeys(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (it kept the last one without a word)."""

    def flatten_mapping(self, node):
        # checked once per mapping, before merging rewrites its keys (`<<: *anchor` then overriding keys is what
        # merging is for); an anchored mapping may be flattened first as the merge source of another
        checked = self.__dict__.setdefault("_checked", set())
        if id(node) not in checked:
            checked.add(id(node))
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(None, None, f"the key '{key}' appears twice in one mapping",
                                                                key_node.start_mark)
                    seen.add(key)
                except TypeError:  # an unhashable key: the base constructor says so
                    pass
        super().flatten_mapping(node)


def check_values(raw: dict, fail) -> None:
    """Plain YAML values only, and a bounded tree: no alias bomb, no deep nesting, no NaN, inf or huge numbers."""
    stack, count = [(raw, "", 0)], 0
    while stack:
        node, where, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            fail(f"more than {MAX_VALUES:,} values once YAML aliases are expanded")
        if depth > MAX_DEPTH:
            fail(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if _bad_number(node):
            fail(f"{where}: {shown(node)} {NOT_A_NUMBER}")
        if isinstance(node, dict):
            for key in node:
                if not isinstance(key, str):
                    fail(f"{where or '(top level)'}: key {shown(key)} is not text; quote it")
            stack.extend((value, f"{where}.{key}" if where else key, depth + 1) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, f"{where}.{i}", depth + 1) for i, value in enumerate(node))
        elif not isinstance(node, (str, int, float, bool, type(None))):
            fail(f"{where}: a {type(node).__name__} (from a YAML tag or an unquoted date) is not a study value; quote it")


def _bad_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not abs(value) < MAX_NUMBER


def check_numbers(tree, origin, fail, loc: str = "") -> None:
    """Validated values too: pydantic reads the strings 'nan', 'inf' and '1e400' as floats."""
    if isinstance(tree, dict | list | tuple):
        for key, value in tree.items() if isinstance(tree, dict) else enumerate(tree):
            check_numbers(value, origin, fail, f"{loc}.{key}" if loc else str(key))
    elif _bad_number(tree):
        fail(f"{origin(loc)}: {shown(tree)} {NOT_A_NUMBER}")


def check_flags(given, validated, origin, fail, loc: str = "") -> None:
    """A yes/no written where a number goes: pydantic reads true as 1 (`batch_size: true` trained with batches of one)."""
    if isinstance(given, dict) and isinstance(validated, dict):
        for key in given.keys() & validated.keys():
            check_flags(given[key], validated[key], origin, fail, f"{loc}.{key}" if loc else str(key))
    elif isinstance(given, list) and isinstance(validated, list | tuple) and len(given) == len(validated):
        for i, (one, other) in enumerate(zip(given, validated)):
            check_flags(one, other, origin, fail, f"{loc}.{i}")
    elif isinstance(given, bool) and not isinstance(validated, bool):
        fail(f"{origin(loc)}: a number, not a yes/no (got {str(given).lower()})")


def dotted_key(tree, prefix: str = "") -> tuple[str, str] | None:
    """(the path to it, the key) of the first key of a nested mapping that holds a dot; None where there is none."""
    for key, value in tree.items() if isinstance(tree, dict) else ():
        if isinstance(key, str) and "." in key:
            return prefix, key
        if found := dotted_key(value, f"{prefix}{key}."):
            return found
    return None


def seed_list(seeds, key, fail) -> tuple[int, ...]:
    if isinstance(seeds, int):
        if not 1 <= seeds <= MAX_RUNS:
            fail(f"{key}: give a positive count (at most {MAX_RUNS:,}) or a list of seeds (got {seeds})")
        return tuple(range(seeds))
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) > MAX_SEED:
        fail(f"{key}: a list of distinct integers from 0 to {MAX_SEED:,} (got {shown(seeds)})")
    return tuple(seeds)


def check_execution(where: str, block, fail) -> None:
    """`base.execution` may fix `fused_optimizer` for the whole study; the rest is chosen when running."""
    if where != "base":
        fail(f"{where}.execution: a study computes all its runs alike; set execution.fused_optimizer in base")
    if not isinstance(block, dict):
        fail("base.execution: a mapping, e.g. {fused_optimizer: true}")
    for key in block:
        if key not in StudyExecution.model_fields:
            fail(f"base.execution.{key}: how runs are computed is chosen when running (--threads, --device, --pack), "
                 f"not in the study file; a study may fix only execution.fused_optimizer")
    try:
        StudyExecution.model_validate(block)
    except ValidationError as err:
        fail(describe(err, StudyExecution, block, origin=lambda loc: f"base.execution.{loc}"))


def check_metric(metric: str, datasets, fail, where: str = "metric"):
    for dataset in datasets:
        task = task_of(dataset)
        if (task == "regression" and metric in CLASSIFICATION_ONLY) or (task == "classification" and metric in REGRESSION_ONLY):
            fail(f"{where}: '{metric}' does not apply to {dataset} ({task}); use test_loss")


def check_search(key: str, block: Search, top: StudyFile, configs: dict, variants, fail) -> None:
    """The searched variant and dataset exist, and every corner of the space is a valid config."""
    for name in ("variant", "dataset"):
        if key == "tune" and getattr(block, name) is not None:
            fail(f"tune.{name}: a tune block tunes every variant on every dataset; {name} chooses the one config of a search "
                 f"block (to tune only some variants, put the others in a study of their own)")
    if block.variant is not None and block.variant not in variants:
        fail(f"{key}.variant: '{block.variant}' is not a variant (variants: {', '.join(variants)})")
    if block.dataset is not None and block.dataset not in top.datasets:
        fail(f"{key}.dataset: '{block.dataset}' is not in this study (datasets: {', '.join(top.datasets)})")
    for path in block.space:
        if path.split(".")[0] == "execution":
            fail(f"{key}.space.{path}: how runs are computed is chosen when running (--threads, --device, --pack), not searched")
        if path == "data.name":
            fail(f"{key}.space.data.name: the datasets are the study's `datasets:`, not searched (a search block names one "
                 f"with `dataset:`)")
    for (dataset, variant), config in configs.items():
        if key == "search" and (variant != search_variant(block, top.baseline, variants) or dataset != (block.dataset or next(iter(top.datasets)))):
            continue
        if task_of(dataset) == "regression" and block.objective == "val_acc":
            fail(f"{key}.objective: val_acc does not apply to {dataset} (regression); use val_loss")
        if task_of(dataset) == "classification" and block.objective in REGRESSION_ONLY:
            fail(f"{key}.objective: {block.objective} does not apply to {dataset} (classification); use val_acc or val_loss")
        for path, param in block.space.items():
            for value in (param.choices or []) + [v for v in (param.low, param.high) if v is not None]:
                if param.type == "int":
                    value = int(value)
                tree = deep_merge(config.canonical(), nest(path, value))
                try:
                    corner = RunConfig.model_validate(tree)
                except ValidationError as err:
                    section, _, leaf = path.rpartition(".")
                    alien = sorted({str(e["loc"][-1]) for e in err.errors() if e["type"] == "extra_forbidden"})
                    if leaf == "name" and alien and len(alien) == len(err.errors()):  # a union switched under settings of another kind
                        fail(f"{key}.space.{path}: the choice {shown(value)} does not take the settings of this variant's "
                             f"{shown(value_at(config.canonical(), path, value))} ({', '.join(alien)}); a search cannot switch between "
                             f"{section.split('.')[-1]}s with settings of their own: make each one a variant")
                    fail(f"{key}.space.{describe(err, RunConfig, tree)}")
                check_size(corner, f"{key}.space.{path} = {shown(value)} on {dataset}", fail)
                check_split(corner, f"{key}.space.{path} = {shown(value)} on {dataset}", fail)
                got = value_at(corner.canonical(), path, value)
                if param.type == "categorical" and (got != value or isinstance(got, bool) != isinstance(value, bool)):  # '64' as 64
                    fail(f"{key}.space.{path}: the choice {shown(value)} would train as {shown(got)}; write {shown(got)}")
            if param.type == "float":  # the corners may be whole numbers where the range between them is not
                half = (param.low + param.high) / 2
                value = half + min(0.5, (param.high - param.low) / 4) if half.is_integer() else half
                tree = deep_merge(config.canonical(), nest(path, value))
                try:
                    RunConfig.model_validate(tree)
                except ValidationError as err:
                    if any(e["type"] == "int_from_float" for e in err.errors()):
                        fail(f"{key}.space.{path}: {path} takes whole numbers, but a float range samples fractions "
                             f"(such as {value:g}); use type: int")
                    fail(f"{key}.space.{describe(err, RunConfig, tree)}")


def model_size(config: RunConfig) -> tuple[int, int]:
    """(parameters, activation values per example, an upper bound) of the model `config` builds, by arithmetic.

    Mirrors models.py without torch, so that a model too large for any machine is refused before
    anything is allocated; raises ValueError where models.py would (a CNN that shrinks its input away).
    """
    cfg, (shape, outputs) = config.model, components.get("dataset", config.data.name).inputs
    if cfg.name not in ("mlp", "cnn", "resnet"):
        return 0, 0  # a plug-in's model: its size is known only once built
    if cfg.name == "resnet":
        return _resnet_size(cfg, shape, outputs)
    params, acts = 0, math.prod(shape)
    if cfg.name == "cnn" and len(shape) == 3:  # (on other inputs models.py refuses it when the run starts)
        channels, size = shape[0], shape[1:]
        for out in cfg.channels:
            params += channels * out * cfg.kernel_size**2 + out + (2 * out if cfg.norm != "none" else 0)
            size = tuple(s + 2 * cfg.padding - cfg.kernel_size + 1 for s in size)
            acts += (3 if cfg.norm != "none" else 2) * out * max(math.prod(size), 0)  # convolution, (norm,) activation
            if cfg.pool:
                size = tuple(s // cfg.pool for s in size)
                acts += out * max(math.prod(size), 0)
            if min(size) < 1:
                raise ValueError(f"the CNN shrinks a {shape[1]}x{shape[2]} input to nothing; use padding or fewer layers")
            channels = out
        width = channels * math.prod(size)
    else:
        width = math.prod(shape)
    for hidden in cfg.hidden:
        params += width * hidden + hidden + (2 * hidden if cfg.norm != "none" else 0)
        acts += (4 if cfg.norm != "none" else 3) * hidden  # linear, (norm,) activation, dropout
        width = hidden
    return params + width * outputs + outputs, acts + outputs


def _resnet_size(cfg, shape, outputs) -> tuple[int, int]:
    """model_size of models.build_resnet; a non-image input is refused when the run starts (as for a CNN)."""
    if len(shape) != 3:
        return 0, 0
    normed, size = cfg.norm != "none", shape[1] * shape[2]

    def conv(cin, cout, k):  # weights, and a bias only without a norm (whose weight and bias take its place)
        return cin * cout * k * k + (2 * cout if normed else cout)

    w, blocks = cfg.width, (cfg.depth - 2) // 6
    params, acts, cin = conv(shape[0], w, 3), 3 * w * size, w
    for stage, cout in enumerate((w, 2 * w, 4 * w)):
        for i in range(blocks):
            if stage and not i:
                size = -(-shape[1] // 2 ** stage) * -(-shape[2] // 2 ** stage)
            params += conv(cin, cout, 3) + conv(cout, cout, 3) + (conv(cin, cout, 1) if cin != cout else 0)
            acts += 8 * cout * size
            cin = cout
    return params + cin * outputs + outputs, acts + cin + outputs


def check_size(config: RunConfig, where: str, fail) -> None:
    """Refuse a model whose weights, optimizer state and one batch's activations exceed MAX_MODEL_BYTES."""
    try:
        params, acts = model_size(config)
    except ValueError as err:
        fail(f"{where}: model: {err}")
    batch = config.train.batch_size if isinstance(config.train.batch_size, int) else MAX_TRAIN
    batch = min(batch, config.data.train_size or MAX_TRAIN, MAX_TRAIN)
    need = 4 * (4 * params + 2 * batch * acts)  # float32; forward and backward values of a batch
    if need > MAX_MODEL_BYTES:
        fail(f"{where}: model: needs about {need / 2**30:,.0f} GiB ({params:,} parameters, {acts:,} activations per example, "
             f"batches of {batch:,}); a study model may need at most {MAX_MODEL_BYTES // 2**30} GiB")


def check_split(config: RunConfig, where: str, fail) -> None:
    """Refuse validation and training sets larger than the dataset's training split (where its registry record knows it)."""
    data = config.data
    total = components.get("dataset", data.name).train_split
    if total is None:
        return
    if data.val_size >= total:
        fail(f"{where}: data.val_size {data.val_size:,} leaves no training data ({data.name} has {total:,} training examples)")
    if data.train_size is not None and data.train_size > total - data.val_size:
        fail(f"{where}: data.train_size {data.train_size:,} is more than the {total - data.val_size:,} training examples "
             f"{data.name} has beside data.val_size {data.val_size:,}")
