"""The one registry of what a study can name: models, datasets, optimizers, schedules, augmentations.

A record (`Component`) says what a study file may write for one component, its name and its typed
parameters (a pydantic class: no torch), and where its constructor lives ("module:attribute",
imported only when a run trains), so validating a study stays fast. The built-ins are recorded in
`builtin.py`. A plug-in is any importable module with a `COMPONENTS` list of records, found through
the Python entry-point group `suite.components` (an installed package's `[project.entry-points]`) or
named in a study's `plugins:` list. Unknown names list the valid ones.

Constructor signatures (what `build` names):
  model         fn(cfg, in_shape, num_outputs) -> torch.nn.Module
  dataset       fn(root: pathlib.Path) -> suite.components.data.Raw
  optimizer     a torch.optim.Optimizer class: cls(params, **every field of the config but `name`)
  schedule      fn(cfg, t, total, steps_per_epoch) -> factor of the base learning rate at step t of total
  augmentation  fn(x, value, fill, generator) -> x: a batch (N, C, H, W) augmented by `data.augment.<name>: value`
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..errors import SuiteError

KINDS = ("model", "dataset", "optimizer", "schedule", "augmentation")
NAMED = ("model", "optimizer", "schedule")  # written as `{name: ..., <params>}` blocks, validated by the record's class
ENTRY_POINTS = "suite.components"  # the entry-point group plug-in packages register their modules under
BUILTIN = "suite"  # the source of the built-in components


class ComponentError(SuiteError):
    """A plug-in that cannot be loaded or registered: one line."""

    exit_code = 2


@dataclass(frozen=True)
class Component:
    kind: str  # one of KINDS
    name: str  # what a study file writes (`model: {name: ...}`, `datasets: [...]`, `data.augment: {name: value}`)
    build: str  # "module:attribute" of the constructor (see the module docstring for each kind's signature)
    doc: str  # one line: what it is
    params: Any = None  # model/optimizer/schedule: a pydantic class with `name: Literal[name]`; augmentation: its value's type
    task: str | None = None  # dataset: "classification" or "regression"
    inputs: tuple | None = None  # dataset: (input shape, outputs)
    test_split: tuple | None = None  # dataset: (examples, share of the largest class) of its full test split, if known
    train_split: int | None = None  # dataset: examples in its full training split (validation is carved from it), if known
    classes: tuple[str, ...] | None = None  # dataset: its classes' names, by label (reports name them; None: the labels)
    source: str = BUILTIN  # "package==version" of the plug-in that provides it

    def load(self):
        """The constructor (imports its module: torch comes in here, not when a study is validated). A plug-in's
        comes checked: what it returns must be what its kind returns, else a TypeError that names the component."""
        return _attribute(self.build) if self.source == BUILTIN else _checked(self)


_registry: dict[tuple[str, str], Component] = {}
_loaded: set[str] = set()  # modules whose COMPONENTS are registered
_places: set[str] = set()  # the files and folders of the plug-ins' own code (`plugin_frame`)
_ready = False


def register(component: Component) -> None:
    """Add one record; a second record of the same kind and name from another source is refused."""
    if component.kind not in KINDS:
        raise ComponentError(f"{component.source}: unknown component kind '{component.kind}' (allowed: {', '.join(KINDS)})")
    if component.kind == "dataset" and (component.task not in ("classification", "regression") or not component.inputs):
        raise ComponentError(f"{component.source}: dataset '{component.name}' needs task (classification or regression) and inputs")
    if component.kind in NAMED and not _named_class(component.params, component.name):
        raise ComponentError(f"{component.source}: {component.kind} '{component.name}' needs params: a frozen pydantic class "
                             f"with a field name: Literal['{component.name}']")
    have = _registry.get((component.kind, component.name))
    if have is not None and have != component:
        raise ComponentError(f"{component.source}: {component.kind} '{component.name}' is already provided by {have.source}")
    _registry[component.kind, component.name] = component


def get(kind: str, name: str) -> Component:
    """The record of `name`; unknown: a ValueError listing the names of this kind."""
    _ensure()
    try:
        return _registry[kind, name]
    except KeyError:
        raise ValueError(f"unknown {kind} '{name}' (allowed: {', '.join(names(kind))})") from None


def names(kind: str) -> list[str]:
    _ensure()
    return [name for k, name in _registry if k == kind]


def records(kind: str) -> list[Component]:
    _ensure()
    return [c for (k, _), c in _registry.items() if k == kind]


def load_plugins(modules=()) -> None:
    """Import plug-in modules (a study's `plugins:` list) and register their COMPONENTS; each loads once."""
    _ensure()
    for module in modules:
        _load_module(module, None)


def class_names(dataset: str) -> tuple[str, ...] | None:
    """The names of a dataset's classes, by label, where its record gives them."""
    try:
        return get("dataset", dataset).classes
    except ValueError:  # a plug-in's dataset whose plug-in this process has not loaded
        return None


def class_name(dataset: str, label: int) -> str:
    """A class as reports name it: its dataset record's name for it (CIFAR-10's 3: 'cat'), else the label itself."""
    names = class_names(dataset)
    return names[label] if names and 0 <= label < len(names) else str(label)


def sources(config) -> list[str]:
    """The plug-in packages ("name==version") whose components a resolved run config uses (for its provenance)."""
    used = [("model", config.model.name), ("optimizer", config.optimizer.name), ("dataset", config.data.name),
            ("schedule", config.train.schedule.name), *(("augmentation", k) for k in (config.data.augment.model_extra or {}))]
    return sorted({get(kind, name).source for kind, name in used} - {BUILTIN})


def _named_class(params, name: str) -> bool:
    from typing import get_args

    from pydantic import BaseModel

    field = getattr(params, "model_fields", {}).get("name")
    return (isinstance(params, type) and issubclass(params, BaseModel) and bool(params.model_config.get("frozen"))
            and field is not None and name in get_args(field.annotation))


@functools.cache
def _attribute(build: str):
    """What "module:attribute" names, resolved once per process (augmentations look theirs up every batch)."""
    module, _, attribute = build.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _ensure() -> None:
    global _ready
    if _ready:
        return
    if "suite.spec.config" not in sys.modules:  # the built-ins' parameter classes: their module's defaults, validated as it
        importlib.import_module("..spec.config", __package__)  # (is imported, read the registry: they come back here)
        if _ready:
            return
    _ready = True
    from . import builtin  # noqa: F401  (registers the built-ins)

    for point in importlib.metadata.entry_points(group=ENTRY_POINTS):
        dist = getattr(point, "dist", None)
        _load_module(point.value.partition(":")[0], f"{dist.name}=={dist.version}" if dist else None)


def _load_module(module: str, source: str | None) -> None:
    if module in _loaded:
        return
    try:
        loaded = importlib.import_module(module)
    except Exception as err:
        raise ComponentError(f"plug-in '{module}' cannot be imported ({type(err).__name__}: {err})") from None
    found = getattr(loaded, "COMPONENTS", None)
    if not isinstance(found, (list, tuple)) or not all(isinstance(c, Component) for c in found):
        raise ComponentError(f"plug-in '{module}' has no COMPONENTS list of suite.components.Component records")
    parts = [component.build.partition(":")[0] for component in found]
    for component, part in zip(found, parts):
        what = f"plug-in '{module}': {component.kind} '{component.name}' is built by {component.build}"
        try:
            there = _findable(part)
        except Exception as err:  # a parent package that raises on import
            raise ComponentError(f"{what}, whose package cannot be imported ({type(err).__name__}: {err})") from None
        if not there:
            raise ComponentError(f"{what}, but there is no module {part}")
    owners = importlib.metadata.packages_distributions()  # (top-level module -> its distributions: reads every one installed)
    own = _own_places(module, parts, owners)
    source = _provenance(module, source, own, owners)
    for component in found:
        register(Component(**{**component.__dict__, "source": source}))
    _places.update(own)
    _loaded.add(module)


def _findable(module: str) -> bool:
    """Whether `module` can be imported: found without running it (a constructor module imports torch); its parent
    packages are imported (their errors are the caller's to report)."""
    if module in sys.modules:  # (also one made in memory, which has no spec to find)
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package that does not exist
        return False


OTHERS = {"suite", "torch", "torchvision", "numpy", *sys.stdlib_module_names}  # never a plug-in's own code


def _own_places(module: str, parts: list[str], owners: dict) -> list[str]:
    """The files and folders of a plug-in's own code: the top-level package of its COMPONENTS module and those of its
    constructors, less other installed packages (a constructor `timm.models:resnet18` is timm's code, not the plug-in's).
    `owners`: importlib.metadata.packages_distributions()."""
    top = module.split(".")[0]
    mine = set(owners.get(top, []))
    tops = dict.fromkeys([top, *(part.split(".")[0] for part in parts)])
    return [place for each in tops if each == top or not owners.get(each) or mine & set(owners[each]) for place in _place(each)]


def _place(top: str) -> list[str]:
    """The file, or the package's folders, of the top-level module or package `top`."""
    if top in OTHERS:
        return []
    try:
        spec = sys.modules[top].__spec__ if top in sys.modules else importlib.util.find_spec(top)
    except Exception:
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [os.path.join(os.path.realpath(folder), "") for folder in spec.submodule_search_locations]
    return [os.path.realpath(spec.origin)] if spec.origin and os.path.isfile(spec.origin) else []


def plugin_frame(err: BaseException) -> str | None:
    """Where in a plug-in's own code `err` was raised ("my_tricks/parts.py:7 in noise", relative to the current
    folder where it lies inside it): the innermost such frame of the innermost exception that has one."""
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    for each in reversed(chain):
        tb, found = each.__traceback__, None
        while tb is not None:
            path = os.path.realpath(tb.tb_frame.f_code.co_filename)
            if any(path == place or path.startswith(place) for place in _places):
                found = (path, tb.tb_lineno, tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        if found:
            path, line, function = found
            shown = os.path.relpath(path)
            return f"{path if shown.startswith('..') else shown}:{line} in {function}"
    return None


def _a(value) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


_wrapped: dict[tuple[str, str, str], Any] = {}  # (kind, name, build) -> the checked constructor, made once per process


def _checked(component: Component):
    """A plug-in's constructor, wrapped so that what it returns is checked against its kind's signature."""
    key = (component.kind, component.name, component.build)  # (a record may hold lists: not hashable itself)
    if key not in _wrapped:
        _wrapped[key] = _wrap(component)
    return _wrapped[key]


def _wrap(component: Component):
    try:
        build = _attribute(component.build)
    except Exception as err:  # (the module was found when the plug-in loaded: here it raised, or lacks the attribute)
        raise ImportError(f"{component.kind} '{component.name}' ({component.build}) cannot be loaded: "
                          f"{type(err).__name__}: {err}") from err
    import numbers

    import torch

    from .data import Raw

    def number(out) -> bool:  # (a 0-d tensor or array too)
        return (isinstance(out, numbers.Real) or getattr(out, "ndim", None) == 0) and not isinstance(out, bool)

    wanted = {  # kind: (is what it returned right, given the call's arguments; what it should have been)
        "model": (lambda out, *args: isinstance(out, torch.nn.Module), lambda *args: "a torch.nn.Module"),
        "optimizer": (lambda out, *args: isinstance(out, torch.optim.Optimizer), lambda *args: "a torch.optim.Optimizer"),
        "schedule": (lambda out, *args: number(out), lambda *args: "a number (the factor of the learning rate)"),
        "augmentation": (lambda out, x, *args: isinstance(out, torch.Tensor) and out.shape == x.shape,
                         lambda x, *args: f"a tensor of the batch's shape {tuple(x.shape)}"),
        "dataset": (lambda out, *args: isinstance(out, Raw), lambda *args: "a suite.components.data.Raw"),
    }
    right, should = wanted[component.kind]

    def checked(*args, **kwargs):
        out = build(*args, **kwargs)
        if not right(out, *args):
            raise TypeError(f"{component.kind} '{component.name}' ({component.build}) returned {_a(out)}, not {should(*args)}")
        return out

    return checked


def _provenance(module: str, source: str | None, places: list[str], owners: dict) -> str:
    """What a plug-in's runs record of it (tag suite.plugins): "name==version" of the installed package that holds
    `module` (`source`, where its entry point said it), and a hash of its source files where that version does not
    pin its code (an editable install) or there is none (a module on PYTHONPATH): the hash says when the code changed."""
    if source is None:
        for dist in owners.get(module.split(".")[0], []):
            try:
                source = f"{dist}=={importlib.metadata.version(dist)}"
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    if source is None:
        return f"{module} (not an installed package; source sha256 {_source_hash(places)})"
    return f"{source} (editable; source sha256 {_source_hash(places)})" if _editable(source.split("==")[0]) else source


def _editable(dist: str) -> bool:
    """Whether the installed distribution `dist` is an editable install (`pip install -e`: its version pins no code)."""
    import json

    try:
        return bool(json.loads(importlib.metadata.distribution(dist).read_text("direct_url.json") or "{}")
                    .get("dir_info", {}).get("editable"))
    except (importlib.metadata.PackageNotFoundError, ValueError, AttributeError):
        return False


def _source_hash(places: list[str]) -> str:
    """sha256 (first 12 hex digits) over the .py files of these folders (by their path inside them) and files."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for place in places:
        root = Path(place)
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for path in files:
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(root) if root.is_dir() else path.name).encode() + b"\0")
            try:
                digest.update(path.read_bytes())
            except OSError:
                continue
    return digest.hexdigest()[:12]
