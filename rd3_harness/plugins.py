"""The plugin manager (composition layer): built-in default plugins plus entry points of group
`rd3_harness`. It is the only code that calls hooks; it fills the `Registries` containers that
the layers below are handed.

Each plugin is loaded in isolation: one that fails to import, has a hookimpl that does not match
its spec, or describes itself wrongly is recorded as broken with its error and never breaks the
others. `RD3_LOAD_PLUGINS=a,b` limits which entry-point plugins load (empty: none).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from rd3_harness import hookspecs
from rd3_harness.contract import MethodInfo
from rd3_harness.errors import UsageError
from rd3_harness.observers import HOOKS, Observer, Observers
from rd3_harness.registry import DatasetInfo, ModelEntry, Registries
from rd3_harness.version import __version__

ENTRY_POINT_GROUP = "rd3_harness"
LOAD_ENV = "RD3_LOAD_PLUGINS"
GUARD = "rd3_harness.synthesis"
DEFAULT_PLUGINS = {
    "random": "rd3_harness.default_plugins.random_real",
    "core-datasets": "rd3_harness.default_plugins.datasets",
    "core-models": "rd3_harness.default_plugins.models",
    "core-protocols": "rd3_harness.default_plugins.protocols",
}


@dataclass
class PluginRecord:
    """One plugin as `rd3h plugins` shows it."""

    name: str
    module: str
    version: str
    distribution: str | None
    builtin: bool
    hooks: tuple[str, ...] = ()
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    method: MethodInfo | None = None

    @property
    def status(self) -> str:
        return "broken" if self.error else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "distribution": self.distribution,
            "module": self.module,
            "builtin": self.builtin,
            "hooks": list(self.hooks),
            "status": self.status,
            "error": self.error,
            "warnings": self.warnings,
            "method": None if self.method is None else self.method.summary,
        }


def allowed_from_env() -> set[str] | None:
    value = os.environ.get(LOAD_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


class Plugins:
    """A loaded set of plugins and the registries they feed."""

    def __init__(self, allowed: set[str] | None = None, entry_points: bool = True):
        self.pm = pluggy.PluginManager("rd3_harness")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        for name, module in DEFAULT_PLUGINS.items():
            record = PluginRecord(name, module, __version__, "rd3-harness", builtin=True)
            self._add(record, lambda m=module: importlib.import_module(m))
        if entry_points:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if (allowed is not None and ep.name not in allowed) or ep.name in self.records:
                    continue
                dist = getattr(ep, "dist", None)
                record = PluginRecord(
                    ep.name, ep.value, dist.version if dist else "?", dist.name if dist else None, builtin=False
                )
                self._add(record, ep.load)

    def add(self, name: str, plugin: ModuleType | object, version: str = "0") -> PluginRecord:
        """Register an in-process plugin (a module or object with hookimpls), with the same checks
        as an installed one; returns its record (see `.error`)."""
        record = PluginRecord(name, getattr(plugin, "__name__", type(plugin).__name__), version, None, builtin=False)
        self._add(record, lambda: plugin)
        self.__dict__.pop("registries", None)
        return record

    def _add(self, record: PluginRecord, load: Callable[[], ModuleType]) -> None:
        self.records[record.name] = record
        try:
            plugin = load()
        except Exception as exc:  # noqa: BLE001 - any import failure makes the plugin broken
            record.error = f"import failed: {type(exc).__name__}: {exc}"
            return
        try:
            self.pm.register(plugin, name=record.name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            record.error = (
                f"invalid hook implementation: {' '.join(str(exc).split())}. A hook may take only arguments "
                "named in its spec (see CONTRIBUTING.md, 'Hooks')"
            )
            return
        except ValueError as exc:  # already registered under another name
            record.error = str(exc)
            return
        record.hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or ()))
        problem = self._check_method(record)
        if problem:
            self.pm.unregister(plugin)
            record.error = problem

    def _impl(self, hook: str, plugin: str) -> pluggy.HookImpl | None:
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        return next((i for i in impls if i.plugin_name == plugin and not i.wrapper), None)

    def _check_method(self, record: PluginRecord) -> str | None:
        has_synth, has_info = "synthesize" in record.hooks, "method_info" in record.hooks
        if has_synth and not has_info:
            return "implements synthesize but not method_info: add `@hookimpl def method_info() -> MethodInfo`"
        if not has_info:
            return None
        if not has_synth:
            return "implements method_info but not synthesize: add `@hookimpl def synthesize(ctx)`"
        try:
            info = self._impl("method_info", record.name).function()
        except Exception as exc:  # noqa: BLE001
            return f"method_info() raised {type(exc).__name__}: {exc}"
        if not isinstance(info, MethodInfo):
            return f"method_info() must return rd3_harness.MethodInfo, not {type(info).__name__}"
        if info.name != record.name:
            return f"method_info().name is {info.name!r} but the plugin is installed as {record.name!r}"
        problems = info.problems()
        if problems:
            return "method_info: " + "; ".join(problems)
        record.method = info
        return None

    def _collect(self, hook: str, kind: str, key: Callable[[Any], str], make: Callable[..., Any]) -> dict[str, Any]:
        """Call one register_* hook plugin by plugin; a failing plugin is marked broken."""
        found: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):  # registration order
            record = self.records.get(impl.plugin_name)
            added: dict[str, Any] = {}

            def register(*args: Any, _added: dict = added, **kwargs: Any) -> None:
                item = make(*args, **kwargs)
                _added[key(item)] = item

            try:
                impl.function(*[{"register": register}[a] for a in impl.argnames])
            except Exception as exc:  # noqa: BLE001
                if record is not None:
                    record.error = f"{hook} raised {type(exc).__name__}: {exc}"
                continue
            for name, item in added.items():
                if name in found:
                    if record is not None:
                        record.warnings.append(f"{kind} {name!r} is already registered by {owner[name]}; ignored")
                    continue
                found[name], owner[name] = item, impl.plugin_name
        return found

    @cached_property
    def registries(self) -> Registries:
        """What the plugins registered: datasets, architectures and protocol files, by name."""

        def dataset(info: DatasetInfo) -> DatasetInfo:
            if not isinstance(info, DatasetInfo):
                raise TypeError(f"register() takes a DatasetInfo, not {type(info).__name__}")
            return info

        def model(name: str, factory: Callable, description: str = "") -> ModelEntry:
            return ModelEntry(name, factory, description)

        protocols = self._collect("register_protocols", "protocol", lambda p: p[0], lambda n, p: (n, Path(p)))
        return Registries(
            datasets=self._collect("register_datasets", "dataset", lambda d: d.name, dataset),
            models=self._collect("register_models", "model", lambda e: e.name, model),
            protocols=dict(protocols.values()),
        )

    def methods(self) -> dict[str, PluginRecord]:
        return {n: r for n, r in self.records.items() if r.method is not None and not r.error}

    def method(self, name: str) -> PluginRecord:
        """The plugin of a method name, or a UsageError that lists what is installed."""
        methods = self.methods()
        if name in methods:
            return methods[name]
        record = self.records.get(name)
        if record is not None and record.error:
            raise UsageError(f"plugin {name!r} is installed but broken: {record.error}")
        broken = [n for n, r in self.records.items() if r.error]
        extra = f" (broken: {', '.join(broken)}; see `rd3h plugins`)" if broken else ""
        raise UsageError(f"unknown plugin {name!r}; installed methods: {', '.join(sorted(methods))}{extra}")

    def observers(self) -> Observers:
        """The lifecycle hook implementations of every loaded plugin, to be called in isolation."""
        found = [
            Observer(impl.plugin_name, hook, impl.function, tuple(impl.argnames))
            for hook in HOOKS
            for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls())  # registration order
            if not (impl.wrapper or impl.hookwrapper)
        ]
        return Observers(found)

    def synthesize_caller(self, name: str) -> Any:
        """The `synthesize` hook restricted to one method plugin (plus the core guard)."""
        self.method(name)
        if self.pm.get_plugin(GUARD) is None:  # registered on first use: the guard needs torch
            self.pm.register(importlib.import_module(GUARD), name=GUARD)
        others = [self.pm.get_plugin(n) for n in self.methods() if n != name]
        return self.pm.subset_hook_caller("synthesize", remove_plugins=[p for p in others if p is not None])


_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set (loaded on first use, honouring RD3_LOAD_PLUGINS)."""
    global _plugins
    if _plugins is None:
        _plugins = Plugins(allowed_from_env())
    return _plugins


def reset_plugins() -> None:
    """Forget loaded plugins (after installing one, or in tests)."""
    global _plugins
    _plugins = None
    importlib.invalidate_caches()
