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
    source: str = BUILTIN  # "package==version" of the plug-in that provides it

    def load(self):
        """The constructor (imports its module: torch comes in here, not when a study is validated)."""
        return _attribute(self.build)


_registry: dict[tuple[str, str], Component] = {}
_loaded: set[str] = set()  # modules whose COMPONENTS are registered
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
    source = source or _distribution(module)
    for component in found:
        register(Component(**{**component.__dict__, "source": source}))
    _loaded.add(module)


def _distribution(module: str) -> str:
    """"name==version" of the installed package that holds `module`, else the module's own name."""
    top = module.split(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"{module} (not an installed package)"
