"""Study files: read, validate and expand them into run specs.

A study (`studies/<name>.yaml`) asks one question. It has a `base` run configuration,
`variants` (name -> partial config) and/or `grid` axes (dotted path -> values), `seeds`
and `datasets`. Every variant or grid point is deep-merged over the base (the one merge
rule), and each (dataset, variant, seed) becomes a `RunSpec` whose `run_key` hashes the
resolved config and seed. This is the only module that reads YAML; it imports no torch.

    python -m suite validate studies/regularization.yaml
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
import reprlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import components
from .config import (
    CLASSIFICATION_ONLY,
    ByName,
    FUSED_OPTIMIZERS,
    METRIC_DIRECTIONS,
    REGRESSION_ONLY,
    Execution,
    RunConfig,
    StudyExecution,
    flatten,
    packable,
    task_of,
)
from ..errors import StudyError
from .claims import Claim, parse_claim

STUDIES_DIR = Path("studies")
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


class Smoke(BaseModel):
    """How `--smoke` shrinks a study so that it runs in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seeds: int | list[int] = 2
    epochs: int | None = Field(1, ge=1)
    train_size: int | None = Field(2000, ge=1)
    val_size: int | None = Field(500, ge=1)
    test_size: int | None = Field(1000, ge=1)
    trials: int = Field(3, ge=1, description="trials of a search or of each variant's tuning")


class Param(BaseModel):
    """One searched hyperparameter: a float or int range (log-uniform with `log`), or categorical choices."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[bool | int | float | str | None] | None = Field(None, description="scalars only (what Optuna can store)")

    @model_validator(mode="after")
    def _complete(self):
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter takes a non-empty 'choices' list and no low/high")
        elif self.low is None or self.high is None or not self.low < self.high or self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes 'low' < 'high' and no choices")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        elif self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError("an int parameter takes whole-number 'low' and 'high'; use type: float for fractions")
        return self


class Search(BaseModel):
    """A hyperparameter search (Optuna) over one variant's config, judged on a validation metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    objective: Literal["val_acc", "val_loss", "val_mse"] = "val_acc"
    space: dict[str, Param] = Field(min_length=1)
    trials: int = Field(20, ge=1)
    sampler: Literal["tpe", "random", "qmc"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    seed: int = Field(0, ge=0, le=MAX_SEED, description="the sampler's seed, and the training seed of every trial")
    variant: str | None = Field(None, description="whose config to search around (default: the baseline, else the first)")
    dataset: str | None = Field(None, description="default: the first dataset")

    @property
    def direction(self) -> str:
        return "maximize" if self.objective.endswith("acc") else "minimize"


class StudyFile(BaseModel):
    """The top level of a study file, before the run configs are merged and validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    question: str
    description: str = ""
    base: dict = Field(default_factory=dict)
    variants: dict[str, dict] = Field(default_factory=dict)
    grid: dict[str, list | dict] = Field(default_factory=dict, description="axis -> values, or {log_range: [a, b], num: n} / "
                                                                          "{range: [a, b], num: n}")
    seeds: int | list[int] = 5
    datasets: list[str] | dict[str, dict] = Field(default_factory=lambda: {"mnist": {}}, min_length=1)
    metric: str = "test_acc"
    baseline: str | None = None
    claims: list[str] = Field(default_factory=list)
    plugins: list[str] = Field(default_factory=list, description="importable modules whose COMPONENTS the study may name "
                                                                 "(models, datasets, optimizers, schedules, augmentations)")
    smoke: Smoke = Smoke()
    search: Search | None = None
    tune: Search | None = Field(None, description="tune every variant with this budget before its seeds run")

    @field_validator("name")
    @classmethod
    def _name(cls, name):
        _check_name("a study name", name)
        return name

    @field_validator("grid")
    @classmethod
    def _grid_ranges(cls, grid):
        out = {}
        for axis, values in grid.items():
            try:
                out[axis] = grid_range(values) if isinstance(values, dict) else values
            except ValueError as err:
                raise ValueError(f"{axis}: {err}") from None
        return out

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, variants):
        for name in variants:
            _check_name(f"variant name {_shown(name)}", name)
        return variants

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, names):
        """A list of names, or a mapping name -> partial config merged over base for that dataset."""
        if isinstance(names, list):
            if len(set(names)) != len(names):
                raise ValueError("datasets are listed twice")
            names = {name: {} for name in names}
        for name, overrides in names.items():
            components.get("dataset", name)  # unknown: lists the datasets
            if not isinstance(overrides, dict):
                raise ValueError(f"datasets.{name}: a partial config (mapping), or use a list of names")
        return {name: overrides or {} for name, overrides in names.items()}

    @field_validator("metric")
    @classmethod
    def _metric(cls, name):
        if name not in METRIC_DIRECTIONS:
            raise ValueError(f"unknown metric '{name}' (allowed: {', '.join(METRIC_DIRECTIONS)})")
        return name


@dataclass(frozen=True)
class RunSpec:
    study: str
    variant: str
    dataset: str
    seed: int
    point: tuple[tuple[str, Any], ...]  # grid axis values of this run, in axis order
    config: RunConfig
    run_key: str

    @property
    def run_name(self) -> str:
        return f"{self.variant}/seed={self.seed}"


@dataclass(frozen=True)
class Study:
    name: str
    question: str
    description: str
    path: Path
    variants: tuple[str, ...]  # every condition, variants x grid points, in file order
    grid_axes: tuple[str, ...]
    seeds: tuple[int, ...]
    datasets: tuple[str, ...]
    metric: str
    baseline: str | None
    claims: tuple[Claim, ...]
    smoke: Smoke
    configs: dict  # (dataset, variant) -> RunConfig
    points: dict  # variant -> tuple of (axis, value)
    file_sha256: str
    search: Search | None = None
    tune: Search | None = None
    baselines: dict = dataclasses.field(default_factory=dict)  # variant -> its own slice's baseline (a grid crossing variants)
    plugins: tuple[str, ...] = ()  # modules whose components the runs use: every process that trains them imports these

    @property
    def direction(self) -> str:
        return METRIC_DIRECTIONS[self.metric]

    @property
    def run_count(self) -> int:
        return len(self.configs) * len(self.seeds)

    def scientific(self) -> list[str]:
        """The config fields (dotted, as MLflow params) whose value differs between the study's variants."""
        varied: dict = {}
        for dataset in self.datasets:
            flat = [flatten(c.canonical()) for (d, _), c in self.configs.items() if d == dataset]
            for key in dict.fromkeys(k for f in flat for k in f):
                if not key.startswith("execution.") and len({repr(f.get(key)) for f in flat}) > 1:
                    varied[key] = True
        return list(varied)


def _check_name(what: str, name: str) -> None:
    """A study or variant name names a folder: plain, not '.', '..' or hidden, and not too long."""
    if not re.fullmatch(NAME_PATTERN, name) or len(name) > MAX_NAME:
        raise ValueError(f"{what} may only use ASCII letters (a-z, A-Z), digits and _ . + -, may not start with a dot "
                         f"and has at most {MAX_NAME} characters")


# ---------------------------------------------------------------- loading


def find_study(name_or_path: str, studies_dir: Path = STUDIES_DIR) -> Path:
    """A study name (`regularization`) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not _is_file(path):
            raise StudyError(f"{path}: no such study file")
        return path
    path = studies_dir / f"{name_or_path}.yaml"
    if not _is_file(path):
        known = ", ".join(sorted(p.stem for p in studies_dir.glob("*.yaml"))) or "none"
        raise StudyError(f"no study named '{name_or_path}' in {studies_dir}/ (known: {known})")
    return path


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def load_study(name_or_path: str, studies_dir: Path = STUDIES_DIR) -> Study:
    """Read, validate and resolve a study file; every error is one StudyError line."""
    try:
        return _load(find_study(name_or_path, studies_dir))
    except StudyError as err:
        raise StudyError(_one_line(str(err))) from None


class _UniqueKeys(yaml.SafeLoader):
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


def _load(path: Path) -> Study:
    def fail(message: str):
        raise StudyError(f"{path}: {message}")

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            fail(f"larger than {MAX_FILE_BYTES:,} bytes; a study file is a short YAML text")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        fail("not a UTF-8 text YAML file")
    except OSError as err:
        fail(f"cannot read it ({err.strerror or err})")
    try:
        raw = yaml.load(text, Loader=_UniqueKeys)
    except Exception as err:  # PyYAML's errors, and what its constructors raise (`!!int x`, a 30 February, too deep)
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or (str(err).splitlines() or [type(err).__name__])[0]
        fail(f"not valid YAML{where}: {problem}")
    if not isinstance(raw, dict):
        fail("a study file is a mapping with keys name, question, base, variants, ...")
    _check_values(raw, fail)
    plugins = raw.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(m, str) for m in plugins):
        fail("plugins: a list of importable module names")
    try:
        components.load_plugins(plugins)
    except components.ComponentError as err:
        fail(f"plugins: {err}")
    if isinstance(raw.get("datasets"), dict):  # `mnist:` with nothing after it: no settings of its own
        raw["datasets"] = {name: {} if value is None else value for name, value in raw["datasets"].items()}
        if bad := next((name for name, value in raw["datasets"].items() if not isinstance(value, dict)), None):
            fail(f"datasets.{bad}: a mapping of settings for {bad} (e.g. {{model: {{hidden: [512]}}}}), or nothing")
    try:
        top = StudyFile.model_validate(raw)
    except ValidationError as err:
        fail(describe(err, StudyFile, raw))
    _check_numbers(top.model_dump(), str, fail)
    return _resolve(top, path, hashlib.sha256(text.encode()).hexdigest())


def _check_values(raw: dict, fail) -> None:
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
            fail(f"{where}: {_shown(node)} {NOT_A_NUMBER}")
        if isinstance(node, dict):
            for key in node:
                if not isinstance(key, str):
                    fail(f"{where or '(top level)'}: key {_shown(key)} is not text; quote it")
            stack.extend((value, f"{where}.{key}" if where else key, depth + 1) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, f"{where}.{i}", depth + 1) for i, value in enumerate(node))
        elif not isinstance(node, (str, int, float, bool, type(None))):
            fail(f"{where}: a {type(node).__name__} (from a YAML tag or an unquoted date) is not a study value; quote it")


def _bad_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not abs(value) < MAX_NUMBER


def _check_numbers(tree, origin, fail, loc: str = "") -> None:
    """Validated values too: pydantic reads the strings 'nan', 'inf' and '1e400' as floats."""
    if isinstance(tree, dict | list | tuple):
        for key, value in tree.items() if isinstance(tree, dict) else enumerate(tree):
            _check_numbers(value, origin, fail, f"{loc}.{key}" if loc else str(key))
    elif _bad_number(tree):
        fail(f"{origin(loc)}: {_shown(tree)} {NOT_A_NUMBER}")


MAX_RANGE = 1000  # values one range may expand to


def grid_range(spec: dict) -> list:
    """A grid axis written as a range: {log_range: [a, b], num: n} (geometric) or {range: [a, b], num: n} (linear).

    Values keep 6 significant digits (they name variants); a linear range between integers whose
    steps are whole numbers gives integers.
    """
    kinds = [k for k in ("log_range", "range") if k in spec]
    form = "write a range as {log_range: [a, b], num: n} or {range: [a, b], num: n}"
    if len(kinds) != 1 or set(spec) != {kinds[0], "num"}:
        raise ValueError(f"{form}; got {_shown(spec)}")
    kind, ends, num = kinds[0], spec[kinds[0]], spec["num"]
    numeric = (int, float)
    if isinstance(ends, list):  # YAML reads 1e-4 (no dot) as text
        ends = [_as_number(e) for e in ends]
    if not (isinstance(ends, list) and len(ends) == 2 and all(isinstance(e, numeric) and not isinstance(e, bool)
                                                              and math.isfinite(e) for e in ends)):
        raise ValueError(f"{kind}: two finite numbers [a, b]; got {_shown(ends)}")
    if not isinstance(num, int) or isinstance(num, bool) or not 2 <= num <= MAX_RANGE:
        raise ValueError(f"num: a whole number of values from 2 to {MAX_RANGE}; got {_shown(num)}")
    a, b = ends
    if kind == "log_range":
        if a <= 0 or b <= 0:
            raise ValueError(f"log_range: both ends above 0; got {_shown(ends)}")
        values = [a * (b / a) ** (i / (num - 1)) for i in range(num)]
    else:
        if all(isinstance(e, int) for e in ends) and (b - a) % (num - 1) == 0:
            return [a + (b - a) // (num - 1) * i for i in range(num)]
        values = [a + (b - a) * i / (num - 1) for i in range(num)]
    values = [float(f"{v:.6g}") for v in values]
    if len(set(values)) != num:
        raise ValueError(f"{kind} {_shown(ends)} with num {num} repeats values at 6 significant digits")
    return values


def _as_number(value):
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _one_line(text: str) -> str:
    """Line breaks and other control characters (from names, keys or values in the file) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 3, 8, 4


def _shown(value) -> str:
    """A value as an error message quotes it: repr, cut short."""
    return _REPR.repr(value)


def _dotted(tree, prefix: str = "") -> tuple[str, str] | None:
    """(the path to it, the key) of the first key of a nested mapping that holds a dot; None where there is none."""
    for key, value in tree.items() if isinstance(tree, dict) else ():
        if isinstance(key, str) and "." in key:
            return prefix, key
        if found := _dotted(value, f"{prefix}{key}."):
            return found
    return None


def _resolve(top: StudyFile, path: Path, sha: str) -> Study:
    def fail(message: str):
        raise StudyError(f"{path}: {message}")

    for where, tree in [("base", top.base), *((f"datasets.{d}", t) for d, t in top.datasets.items()),
                        *((f"variants.{v}", t) for v, t in top.variants.items())]:
        if "data" in tree and not isinstance(tree["data"], dict):
            fail(f"{where}.data: a mapping of data settings (val_size, train_size, augment, ...)")
        if isinstance(tree.get("data"), dict) and "name" in tree["data"]:
            fail(f"{where}.data.name: set the dataset with the top-level key 'datasets'")
        if "execution" in tree:
            _check_execution(where, tree["execution"], fail)
        if dotted := _dotted(tree):
            inside, key = dotted
            head, _, rest = key.partition(".")
            fail(f"{where}.{inside}{key}: a dotted key here is one unknown name; write it nested ({head}: {{{rest}: ...}}): "
                 f"dotted paths are for grid axes and search spaces")
    seeds = _seed_list(top.seeds, "seeds", fail)
    _seed_list(top.smoke.seeds, "smoke.seeds", fail)
    runs = len(top.datasets) * max(len(top.variants), 1) * math.prod(len(values) for values in top.grid.values()) * len(seeds)
    if runs > MAX_RUNS:
        fail(f"{runs:,} runs (datasets x variants x grid points x seeds); a study may have at most {MAX_RUNS:,}")
    conditions = _conditions(top, fail)
    configs = {}
    for dataset, per_dataset in top.datasets.items():
        for variant, (overrides, point) in conditions.items():
            merged = deep_merge(deep_merge(top.base, per_dataset), overrides)
            merged.setdefault("data", {})["name"] = dataset
            try:
                configs[dataset, variant] = RunConfig.model_validate(merged)
            except ValidationError as err:
                fail(describe(err, RunConfig, merged, origin=_origin(top, variant, point, dataset)))
            _check_numbers(configs[dataset, variant].model_dump(), _origin(top, variant, point, dataset), fail)
            _check_size(configs[dataset, variant], f"variant '{variant}' on {dataset}", fail)
            _check_split(configs[dataset, variant], f"variant '{variant}' on {dataset}", fail)
    _check_metric(top.metric, top.datasets, fail)
    variants = tuple(conditions)
    baseline, baselines = top.baseline, {}
    if baseline is not None and baseline not in variants:
        if not (top.grid and baseline in top.variants):
            fail(f"baseline: '{top.baseline}' is not a variant (variants: {', '.join(variants)})")
        # a variant crossed with grid axes: each grid point (slice) has its own baseline, that variant at the same point
        baselines = {v: ",".join([baseline, *v.split(",")[1:]]) for v in variants}
        baseline = baselines[variants[0]]
    claims = tuple(parse_claim(text, variants, top, fail) for text in top.claims)
    for claim in claims:
        _check_metric(claim.metric, [claim.dataset] if claim.dataset else top.datasets, fail, f"claims: '{claim.text}'")
    for dataset in top.datasets:
        seen, tuned = {}, {}
        for variant in variants:
            canon = json.dumps(configs[dataset, variant].canonical(), sort_keys=True)
            if canon in seen:
                fail(f"variants '{seen[canon]}' and '{variant}' resolve to the same config; one of them is redundant")
            seen[canon] = variant
            if top.tune is not None:  # tuning sets the searched paths alike: their @tuned runs would be the same runs
                canon = json.dumps(_without(configs[dataset, variant].canonical(), top.tune.space), sort_keys=True)
                if canon in tuned:
                    fail(f"variants '{tuned[canon]}' and '{variant}' differ only in what tune.space searches "
                         f"({', '.join(top.tune.space)}), so tuned they are the same config; drop one of them, "
                         f"or take the paths they differ in out of tune.space")
                tuned[canon] = variant
    for key in ("search", "tune"):
        block = getattr(top, key)
        if block is not None:
            _check_search(key, block, top.model_copy(update={"baseline": baseline}), configs, variants, fail)
    return Study(
        name=top.name, question=top.question, description=top.description, path=path,
        variants=variants, grid_axes=tuple(top.grid), seeds=seeds, datasets=tuple(top.datasets),
        metric=top.metric, baseline=baseline, claims=claims, smoke=top.smoke, configs=configs,
        points={v: point for v, (_, point) in conditions.items()}, file_sha256=sha,
        search=top.search, tune=top.tune, baselines=baselines, plugins=tuple(top.plugins),
    )


def _check_search(key: str, block: Search, top: StudyFile, configs: dict, variants, fail) -> None:
    """The searched variant and dataset exist, and every corner of the space is a valid config."""
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
                tree = deep_merge(config.canonical(), _nest(path, value))
                try:
                    corner = RunConfig.model_validate(tree)
                except ValidationError as err:
                    section, _, leaf = path.rpartition(".")
                    alien = sorted({str(e["loc"][-1]) for e in err.errors() if e["type"] == "extra_forbidden"})
                    if leaf == "name" and alien and len(alien) == len(err.errors()):  # a union switched under settings of another kind
                        fail(f"{key}.space.{path}: the choice {_shown(value)} does not take the settings of this variant's "
                             f"{_shown(_at(config.canonical(), path, value))} ({', '.join(alien)}); a search cannot switch between "
                             f"{section.split('.')[-1]}s with settings of their own: make each one a variant")
                    fail(f"{key}.space.{describe(err, RunConfig, tree)}")
                _check_size(corner, f"{key}.space.{path} = {_shown(value)} on {dataset}", fail)
                _check_split(corner, f"{key}.space.{path} = {_shown(value)} on {dataset}", fail)
                got = _at(corner.canonical(), path, value)
                if param.type == "categorical" and (got != value or isinstance(got, bool) != isinstance(value, bool)):  # '64' as 64
                    fail(f"{key}.space.{path}: the choice {_shown(value)} would train as {_shown(got)}; write {_shown(got)}")
            if param.type == "float":  # the corners may be whole numbers where the range between them is not
                half = (param.low + param.high) / 2
                value = half + min(0.5, (param.high - param.low) / 4) if half.is_integer() else half
                tree = deep_merge(config.canonical(), _nest(path, value))
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


def _check_size(config: RunConfig, where: str, fail) -> None:
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


def _check_split(config: RunConfig, where: str, fail) -> None:
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


def search_variant(block: Search, baseline: str | None, variants) -> str:
    return block.variant or baseline or variants[0]


def _seed_list(seeds, key, fail) -> tuple[int, ...]:
    if isinstance(seeds, int):
        if not 1 <= seeds <= MAX_RUNS:
            fail(f"{key}: give a positive count (at most {MAX_RUNS:,}) or a list of seeds (got {seeds})")
        return tuple(range(seeds))
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) > MAX_SEED:
        fail(f"{key}: a list of distinct integers from 0 to {MAX_SEED:,} (got {_shown(seeds)})")
    return tuple(seeds)


def _check_execution(where: str, block, fail) -> None:
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


def _conditions(top: StudyFile, fail) -> dict:
    """variant name -> (overrides to merge over base, grid point)."""
    variants = top.variants or {None: {}}
    axes = list(top.grid)
    for axis in axes:
        if axis.split(".")[0] == "execution":
            fail(f"grid.{axis}: how runs are computed is chosen when running (--threads, --device), not in the study file")
        if not top.grid[axis]:
            fail(f"grid.{axis}: an axis needs at least one value")
        if any(isinstance(value, dict) for value in top.grid[axis]):  # its points would be named by whole mappings
            fail(f"grid.{axis}: an axis lists values of one setting (e.g. grid: {{model.hidden: [[64], [128]]}}), not "
                 f"mappings; make each mapping a variant")
        shown = [format_value(v) for v in top.grid[axis]]
        if len(set(shown)) < len(shown):  # 0.1 and 0.10: one condition twice
            twice = next(v for v in shown if shown.count(v) > 1)
            fail(f"grid.{axis}: the value {twice} appears twice; list each value once")
    labels = _axis_labels(axes)
    out = {}
    for (vname, overrides), values in itertools.product(variants.items(), itertools.product(*top.grid.values())):
        point = tuple(zip(axes, values))
        merged = copy.deepcopy(overrides)
        for axis, value in point:
            merged = deep_merge(merged, _nest(axis, value))
        parts = ([vname] if vname else []) + [f"{labels[a]}={format_value(v)}" for a, v in point]
        out[",".join(parts) or "base"] = (merged, point)
    return out


def _axis_labels(axes: list[str]) -> dict:
    """Short labels for grid axes: the last path component, unless two axes share it."""
    last = [a.rsplit(".", 1)[-1] for a in axes]
    return {a: (short if last.count(short) == 1 else a) for a, short in zip(axes, last)}


def format_value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value)) if abs(value) < 1e15 else repr(value)
    if isinstance(value, list):
        return "x".join(format_value(v) for v in value)
    return str(value)


def _without(tree: dict, paths) -> dict:
    """`tree` (changed in place) less the values at the dotted `paths`."""
    for path in paths:
        *parents, last = path.split(".")
        node = tree
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return tree


def _at(tree, dotted: str, default=None):
    """The value at a dotted path of `tree`, or `default` where there is none."""
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return default
        tree = tree[key]
    return tree


def _nest(dotted: str, value) -> dict:
    tree: Any = value
    for key in reversed(dotted.split(".")):
        tree = {key: tree}
    return tree


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: `over` merged into `base`, recursing into dicts; lists and values replace."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_metric(metric: str, datasets, fail, where: str = "metric"):
    for dataset in datasets:
        task = task_of(dataset)
        if (task == "regression" and metric in CLASSIFICATION_ONLY) or (task == "classification" and metric in REGRESSION_ONLY):
            fail(f"{where}: '{metric}' does not apply to {dataset} ({task}); use test_loss")


def _origin(top: StudyFile, variant: str, point, dataset: str) -> callable:
    """Maps a config key path to where in the file its value came from."""
    vname = variant.split(",")[0] if top.variants else None

    def found(tree: dict, loc: str) -> bool:
        for part in loc.split("."):
            if isinstance(tree, list) and part.isdigit() and int(part) < len(tree):
                tree = tree[int(part)]
            elif isinstance(tree, dict) and part in tree:
                tree = tree[part]
            else:
                return False
        return True

    def origin(loc: str) -> str:
        for axis, _ in point:
            if loc == axis or loc.startswith(axis + "."):
                return f"grid.{axis}"
        if vname and found(top.variants[vname], loc):
            return f"variants.{vname}.{loc}"
        if found(top.datasets[dataset], loc):
            return f"datasets.{dataset}.{loc}"
        for axis, _ in point:  # a mapping the base never wrote there, made by an axis below it (grid: {optimizer.lr.x: ...})
            if axis.startswith(loc + ".") and not isinstance(_at(top.base, loc), dict):
                return f"grid.{axis}"
        return f"base.{loc}"

    return origin


def describe(err: ValidationError, model: type[BaseModel], data: dict, origin=None) -> str:
    """The first validation error as `key.path: what is wrong (allowed: ...)`."""
    e = err.errors()[0]
    loc = _clean_loc(e["loc"], data)
    where = origin(loc) if origin and loc else loc or "(top level)"
    if e["type"] == "extra_forbidden":
        parent, _, key = loc.rpartition(".")
        allowed = _allowed_keys(model, parent, data)
        return f"{where}: unknown key '{key}'" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
        allowed = e.get("ctx", {}).get("expected_tags", "").replace("'", "")
        return f"{where}.name: unknown or missing name {e['ctx'].get('tag', '')!r} (allowed: {allowed})"
    got = e.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {_shown(got)})"
    msg = e["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}{shown}"


def _clean_loc(loc: tuple, data: dict) -> str:
    """Drop the parts pydantic adds for unions (a tag like 'mlp', a type like 'int')."""
    parts, node = [], data
    for part in loc:
        if isinstance(node, dict) and part in node:
            parts.append(str(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            parts.append(str(part))
            node = node[part] if part < len(node) else None
        elif isinstance(node, dict) and part == node.get("name"):
            continue  # a discriminator's tag
        elif isinstance(node, dict):
            parts.append(str(part))  # a missing key
            node = None
    return ".".join(parts)


def _allowed_keys(model: type[BaseModel], parent: str, data: dict) -> list[str]:
    cls, node = model, data
    for part in [p for p in parent.split(".") if p]:
        if cls is None:
            return []
        info = cls.model_fields.get(part)
        node = node.get(part, {}) if isinstance(node, dict) else {}
        cls = _model_class(info.annotation, node, info.metadata) if info else None
    return list(cls.model_fields) if cls else []


def _model_class(annotation, node, metadata=()):
    """The BaseModel class an annotation stands for (a component's by its name, a union member by its name tag)."""
    for meta in metadata:
        by_name = getattr(meta, "func", None)
        if isinstance(by_name, ByName):
            try:
                return components.get(by_name.kind, node.get("name", by_name.default) if isinstance(node, dict) else None).params
            except ValueError:
                return None
    candidates = getattr(annotation, "__args__", None) or (annotation,)
    if hasattr(annotation, "__metadata__"):
        candidates = annotation.__origin__.__args__ if hasattr(annotation.__origin__, "__args__") else (annotation.__origin__,)
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    for cls in models:
        tag = cls.model_fields.get("name")
        if tag is not None and isinstance(node, dict) and node.get("name") in getattr(tag.annotation, "__args__", ()):
            return cls
    return models[0] if len(models) == 1 else None


# ---------------------------------------------------------------- expansion


SHRUNK = {"train.epochs": "epochs", "data.train_size": "train_size", "data.val_size": "val_size", "data.test_size": "test_size"}


def smoke_scale(study: Study) -> dict[str, dict]:
    """What `--smoke` turns each value of a field it shrinks into, over every config of the study.

    One value: the smoke block's (epochs: no more than the full study's). Several (a variant or grid
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
            scale[path] = {values[0]: min(cap, values[0]) if key == "epochs" else cap}
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
        tree = deep_merge(tree, _nest(path, value))
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
                values = ", ".join(f"{path} = {_shown(value)}" for path, value in tuned[dataset, variant].items())
                raise StudyError(f"{study.path}: tuning '{variant}' on {dataset} found {values}, which makes "
                                 f"'{variant}{TUNED}' the same config as '{seen[canon]}'; change tune.space (or that variant) "
                                 f"so that tuning cannot land on it")
            seen[canon] = variant + TUNED
    points = {**study.points, **{v + TUNED: study.points[v] for v in ready}}
    return dataclasses.replace(study, variants=study.variants + tuple(v + TUNED for v in ready), configs=configs, points=points)


def commands(study: Study, smoke: bool, *flags: str) -> tuple[str, str]:
    """(recreate the study's runs, rebuild its report), with the smoke flag for a smoke study, and `flags`."""
    args = " ".join((*(["--smoke"] if smoke else []), *flags))
    extra = f" ARGS={args}" if len(flags) + smoke == 1 else f' ARGS="{args}"' if args else ""
    path = Path(study.path)
    catalogued = path.resolve() == (STUDIES_DIR / f"{study.name}.yaml").resolve()
    target = study.name if catalogued else shlex.quote(str(path))  # a file outside studies/ is named by its path
    return f"make study STUDY={target}{extra}", f"make report STUDY={target}{extra}"


def tuning_budget(study: Study, smoke: bool) -> int:
    """Trials each variant's tuning (a `tune` block) gets."""
    return study.smoke.trials if smoke else study.tune.trials


def tuning_name(study: Study, variant: str, smoke: bool, dataset: str) -> str:
    """The name of the search that tunes `variant` of a study with a `tune` block on `dataset` (Optuna study, MLflow tag
    `suite.search`); the dataset is named when the study has several (each dataset is searched on its own)."""
    return f"{study.name}/{variant}" + (f"/{dataset}" if len(study.datasets) > 1 else "") + ("/smoke" if smoke else "")


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
    tree = _without(search_base(study, variant, dataset, smoke).key_view(), block.space)  # base values no trial sees
    what = {"config": tree, "space": {path: p.model_dump(mode="json", exclude_defaults=True) for path, p in block.space.items()},
            "objective": block.objective, "sampler": block.sampler, "pruner": block.pruner, "seed": block.seed}
    if execution is not None:
        asked, plain = execution.model_dump(mode="json"), Execution().model_dump(mode="json")
        changed = {k: v for k, v in asked.items() if plain.get(k) != v}
        if changed:
            what["execution"] = changed
    return hashlib.sha256(json.dumps(what, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def tuning_targets(study: Study) -> list[tuple[str, str]]:
    """(dataset, variant) pairs a `tune` block tunes: every variant on every dataset, `@tuned` ones excepted."""
    return [(d, v) for d in study.datasets for v in study.variants if not v.endswith(TUNED)]


def baseline_for(study: Study, variant: str) -> str | None:
    """Tuned variants are compared with the tuned baseline, the others with the baseline (of their own slice, where
    the baseline names a variant that a grid crosses)."""
    if study.baseline is None:
        return None
    if variant.endswith(TUNED):
        return baseline_for(study, variant[:-len(TUNED)]) + TUNED
    return study.baselines.get(variant, study.baseline)


def run_key(config: RunConfig, seed: int) -> str:
    """Content hash of the resolved config (less fields at their legacy value) and seed: a run's identity in every store."""
    blob = json.dumps({"config": config.key_view(), "seed": seed}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def with_execution(config: RunConfig, execution: Execution) -> RunConfig:
    """`config` as the executor computes it; a study that asks for a device explicitly keeps it."""
    if config.train.device != "auto":
        execution = execution.model_copy(update={"device": config.train.device})
    # fused: where this call asks for it (--fused-optimizer) or the study fixes it (base.execution)
    fused = (execution.fused_optimizer or config.execution.fused_optimizer) and config.optimizer.name in FUSED_OPTIMIZERS
    if execution.packed:  # packed runs step their own optimizer over the stacked members; unpackable ones train alone
        execution = execution.model_copy(update={"packed": packable(config)})
    # fused where asked and the run is not packed (an unpackable run of a packed call trains alone, as asked)
    execution = execution.model_copy(update={"fused_optimizer": fused and not execution.packed})
    return config.model_copy(update={"execution": execution})


def expand(study: Study, smoke: bool = False, execution: Execution | None = None) -> list[RunSpec]:
    """Every run of the study, dataset-major then variant then seed, resolved for `execution` (default: 1 CPU thread)."""
    seeds = _seed_list(study.smoke.seeds, "smoke.seeds", None) if smoke else study.seeds
    specs, scale = [], smoke_scale(study) if smoke else {}
    for (dataset, variant), config in study.configs.items():
        if smoke:
            config = smoke_config(config, scale)
        config = with_execution(config, execution or Execution())
        for seed in seeds:
            specs.append(RunSpec(study.name, variant, dataset, seed, study.points[variant], config, run_key(config, seed)))
    return specs


def list_studies(studies_dir: Path = STUDIES_DIR) -> list[Path]:
    found = sorted(studies_dir.glob("*.yaml"))
    if not found:
        raise StudyError(f"no study files (*.yaml) in {studies_dir}; pass --studies-dir the folder that holds them")
    return found
