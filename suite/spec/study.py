"""Study files: read, validate and expand them into run specs.

A study (`studies/<name>.yaml`) asks one question. It has a `base` run configuration,
`variants` (name -> partial config) and/or `grid` axes (dotted path -> values), `seeds`
and `datasets`. Every variant or grid point is deep-merged over the base (the one merge
rule), and each (dataset, variant, seed) becomes a `RunSpec` whose `run_key` hashes the
resolved config and seed. This is the only module that loads study YAML (with `checks.UniqueKeys`); it imports no torch.
Beside it: `checks.py` (bounds and checks beyond the types), `grid.py` (the merge rule, grid
axes), `derived.py` (smoke and tuned runs, searches), `messages.py` (one-line errors).

    python -m suite validate studies/regularization.yaml
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import components
from ..errors import StudyError
from .checks import (MAX_FILE_BYTES, MAX_RUNS, MAX_SEED, UniqueKeys, check_execution, check_flags, check_metric, check_name,
                     check_numbers, check_search, check_size, check_split, check_values, dotted_key, seed_list)
from .claims import Claim, parse_claim
from .config import FUSED_OPTIMIZERS, METRIC_DIRECTIONS, Execution, RunConfig, flatten, packable
from .derived import TUNED, smoke_config, smoke_scale
from .grid import conditions_of, deep_merge, grid_range, value_at, without
from .messages import describe, one_line, shown

STUDIES_DIR = Path("studies")


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
    variant: str | None = Field(None, description="search only: whose config to search around (default: the baseline, else the "
                                                  "first); tune tunes every variant")
    dataset: str | None = Field(None, description="search only: the dataset searched (default: the first); tune tunes on each")

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
        check_name("a study name", name)
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
            check_name(f"variant name {shown(name)}", name)
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


def find_study(name_or_path: str, studies_dir: Path = STUDIES_DIR) -> Path:
    """A study name (`regularization`) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not _is_file(path):
            raise StudyError(f"{path}: " + ("not a study file (a folder, or a link to nothing)" if _is_there(path) else "no such study file"))
        return path
    path = studies_dir / f"{name_or_path}.yaml"
    if not _is_file(path):
        if _is_there(path):
            raise StudyError(f"{path} is not a study file (a folder, or a link to nothing)")
        if ("/" in name_or_path or name_or_path.startswith(".")) and _is_there(Path(name_or_path)):  # a path, not a name
            raise StudyError(f"{name_or_path}: " + ("a folder; a study is studies/NAME.yaml or a path to a YAML file"
                                                    if Path(name_or_path).is_dir() else "a study file's name ends in .yaml (or .yml)"))
        known = ", ".join(sorted(p.stem for p in studies_dir.glob("*.yaml") if _is_file(p))) or "none"
        raise StudyError(f"no study named '{name_or_path}' in {studies_dir}/ (known: {known})")
    return path


def _is_there(path: Path) -> bool:
    """Something (a folder, a link, even a broken one) has this name."""
    try:
        return path.is_symlink() or path.exists()
    except (OSError, ValueError):
        return False


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
        raise StudyError(one_line(str(err))) from None


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
        raw = yaml.load(text, Loader=UniqueKeys)
    except Exception as err:  # PyYAML's errors, and what its constructors raise (`!!int x`, a 30 February, too deep)
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or (str(err).splitlines() or [type(err).__name__])[0]
        fail(f"not valid YAML{where}: {problem}")
    if not isinstance(raw, dict):
        fail("a study file is a mapping with keys name, question, base, variants, ...")
    check_values(raw, fail)
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
    dumped = top.model_dump()
    check_numbers(dumped, str, fail)
    check_flags(raw, dumped, str, fail)
    return _resolve(top, path, hashlib.sha256(text.encode()).hexdigest())


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
            check_execution(where, tree["execution"], fail)
        if dotted := dotted_key(tree):
            inside, key = dotted
            head, _, rest = key.partition(".")
            fail(f"{where}.{inside}{key}: a dotted key here is one unknown name; write it nested ({head}: {{{rest}: ...}}): "
                 f"dotted paths are for grid axes and search spaces")
    seeds = seed_list(top.seeds, "seeds", fail)
    seed_list(top.smoke.seeds, "smoke.seeds", fail)
    runs = len(top.datasets) * max(len(top.variants), 1) * math.prod(len(values) for values in top.grid.values()) * len(seeds)
    if runs > MAX_RUNS:
        fail(f"{runs:,} runs (datasets x variants x grid points x seeds); a study may have at most {MAX_RUNS:,}")
    conditions = conditions_of(top, fail)
    configs = {}
    for dataset, per_dataset in top.datasets.items():
        for variant, (overrides, point) in conditions.items():
            merged = deep_merge(deep_merge(top.base, per_dataset), overrides)
            merged.setdefault("data", {})["name"] = dataset
            origin = _origin(top, variant, point, dataset)
            try:
                configs[dataset, variant] = RunConfig.model_validate(merged)
            except ValidationError as err:
                fail(describe(err, RunConfig, merged, origin=origin))
            dumped = configs[dataset, variant].model_dump()
            check_numbers(dumped, origin, fail)
            check_flags(merged, dumped, origin, fail)
            check_size(configs[dataset, variant], f"variant '{variant}' on {dataset}", fail)
            check_split(configs[dataset, variant], f"variant '{variant}' on {dataset}", fail)
    check_metric(top.metric, top.datasets, fail)
    variants = tuple(conditions)
    baseline, baselines = top.baseline, {}
    if baseline is not None and baseline not in variants:
        if not (top.grid and baseline in top.variants):
            fail(f"baseline: '{top.baseline}' is not a variant ("
                 + (f"variants: {', '.join(variants)})" if top.variants else "a study without variants has one, base)"))
        # a variant crossed with grid axes: each grid point (slice) has its own baseline, that variant at the same point
        baselines = {v: ",".join([baseline, *v.split(",")[1:]]) for v in variants}
        baseline = baselines[variants[0]]
    claims = tuple(parse_claim(text, variants, top, fail) for text in top.claims)
    for claim in claims:
        check_metric(claim.metric, [claim.dataset] if claim.dataset else top.datasets, fail, f"claims: '{claim.text}'")
    for dataset in top.datasets:
        seen, tuned = {}, {}
        for variant in variants:
            canon = json.dumps(configs[dataset, variant].canonical(), sort_keys=True)
            if canon in seen:
                fail(f"variants '{seen[canon]}' and '{variant}' resolve to the same config; one of them is redundant")
            seen[canon] = variant
            if top.tune is not None:  # tuning sets the searched paths alike: their @tuned runs would be the same runs
                canon = json.dumps(without(configs[dataset, variant].canonical(), top.tune.space), sort_keys=True)
                if canon in tuned:
                    fail(f"variants '{tuned[canon]}' and '{variant}' differ only in what tune.space searches "
                         f"({', '.join(top.tune.space)}), so tuned they are the same config; drop one of them, "
                         f"or take the paths they differ in out of tune.space")
                tuned[canon] = variant
    for key in ("search", "tune"):
        block = getattr(top, key)
        if block is not None:
            check_search(key, block, top.model_copy(update={"baseline": baseline}), configs, variants, fail)
    return Study(
        name=top.name, question=top.question, description=top.description, path=path,
        variants=variants, grid_axes=tuple(top.grid), seeds=seeds, datasets=tuple(top.datasets),
        metric=top.metric, baseline=baseline, claims=claims, smoke=top.smoke, configs=configs,
        points={v: point for v, (_, point) in conditions.items()}, file_sha256=sha,
        search=top.search, tune=top.tune, baselines=baselines, plugins=tuple(top.plugins),
    )


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
            if axis.startswith(loc + ".") and not isinstance(value_at(top.base, loc), dict):
                return f"grid.{axis}"
        parts = loc.split(".")
        for block in (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)):
            named = value_at(top.variants[vname], f"{block}.name") if vname and found(top.variants[vname], f"{block}.name") else None
            if named is not None and named != value_at(top.base, f"{block}.name"):  # the variant named another model, optimizer
                return f"base.{loc} (merged into variants.{vname}.{block}, name {named})"
        return f"base.{loc}"

    return origin


def commands(study: Study, smoke: bool, *flags: str) -> tuple[str, str]:
    """(recreate the study's runs, rebuild its report), with the smoke flag for a smoke study, and `flags`."""
    return make_command("study", study, smoke, *flags), make_command("report", study, smoke, *flags)


def make_command(target: str, study: Study, smoke: bool, *flags: str, variables: str = "") -> str:
    """`make TARGET STUDY=... [variables] [ARGS=...]` for this study, with the smoke flag for a smoke study, and `flags`."""
    args = " ".join((*(["--smoke"] if smoke else []), *flags))
    extra = f" ARGS={args}" if len(flags) + smoke == 1 else f' ARGS="{args}"' if args else ""
    path = Path(study.path)
    catalogued = path.resolve() == (STUDIES_DIR / f"{study.name}.yaml").resolve()
    name = study.name if catalogued else shlex.quote(str(path))  # a file outside studies/ is named by its path
    return f"make {target} STUDY={name}{' ' + variables if variables else ''}{extra}"


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
    seeds = seed_list(study.smoke.seeds, "smoke.seeds", None) if smoke else study.seeds
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
