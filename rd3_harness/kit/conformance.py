"""`check_plugin`: the conformance check every method plugin must pass (hookimpls against the
specs, `method_info`, config model, output validity, determinism, device placement, speed; see
CONTRIBUTING.md, "The plugin kit")."""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import inspect
import signal
import tempfile
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor
from torch.overrides import TorchFunctionMode

from rd3_harness import hookspecs
from rd3_harness.contract import SyntheticSet
from rd3_harness.errors import PluginFailure, UsageError
from rd3_harness.kit.contexts import (
    SMOKE_CONFIG_ATTRIBUTE,
    SMOKE_IMAGES_PER_CLASS,
    SMOKE_PROTOCOL,
    _placed,
    make_context,
    real_slice,
)
from rd3_harness.settings import Settings


class ConformanceError(AssertionError):
    """A plugin failed `check_plugin`; the message lists what to fix."""


@dataclass
class Conformance:
    """What `check_plugin` found: problems (each says what to fix) and notes (worth knowing)."""

    plugin: str
    config: dict[str, Any] = field(default_factory=dict)
    """The config overrides the syntheses ran with."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    synthesis_s: list[float] = field(default_factory=list)
    """Wall seconds of each synthesis on the smoke protocol."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def __str__(self) -> str:
        if self.ok:
            head = f"plugin {self.plugin!r} conforms"
        else:
            head = f"plugin {self.plugin!r} fails {len(self.problems)} conformance check(s):"
        return "\n".join([head, *(f"  - {p}" for p in self.problems), *(f"  note: {n}" for n in self.notes)])


def hookspec_signatures() -> dict[str, tuple[str, ...]]:
    """Each hook of `rd3_harness.hookspecs` with the names of its arguments."""
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return {n: tuple(inspect.signature(f).parameters) for n, f in vars(hookspecs).items() if hasattr(f, marker)}


def hook_problems(plugin: object) -> list[str]:
    """Static checks of a plugin object (module) against the hookspecs, with the fix for each."""
    specs = hookspec_signatures()
    marker = f"{hookspecs.hookimpl.project_name}_impl"
    problems = []
    for attr in sorted(dir(plugin)):
        obj = getattr(plugin, attr, None)
        if not callable(obj):
            continue
        opts = getattr(obj, marker, None)
        if opts is None:
            if attr in specs and inspect.isfunction(obj):
                problems.append(
                    f"hooks: `{attr}` is not decorated with @hookimpl, so the harness never calls it: "
                    f"add `from rd3_harness import hookimpl` and put `@hookimpl` above `def {attr}`"
                )
            continue
        hook = opts.get("specname") or attr
        if hook not in specs:
            close = difflib.get_close_matches(hook, list(specs), n=1)
            hint = f"did you mean `{close[0]}`?" if close else f"the hooks are: {', '.join(specs)}"
            problems.append(f"hooks: `{hook}` is marked @hookimpl but no hook has that name; {hint}")
            continue
        params = inspect.signature(obj).parameters.values()
        args = [
            p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        extra = [a for a in args if a not in specs[hook]]
        if extra:
            problems.append(
                f"hooks: {hook}({', '.join(args)}) asks for {', '.join(map(repr, extra))}, which the hook never "
                f"passes: its spec is {hook}({', '.join(specs[hook])}). Remove {'it' if len(extra) == 1 else 'them'}: "
                "a hook may take any subset of its spec's arguments (a method's settings come from ctx.config)"
            )
    return problems


def config_problems(model: type[BaseModel], config: BaseModel) -> list[str]:
    """Behavioural checks of a method's config model, and of one validated config of it."""
    fix = "declare it as `class Config(BaseModel, frozen=True, extra='forbid')`"
    problems = []
    field_name = next(iter(model.model_fields), "rd3_probe")
    if not _refused(lambda: setattr(config, field_name, getattr(config, field_name, None)), "frozen_instance"):
        problems.append(f"config: {model.__name__} can be changed after validation; {fix}")
    if not _refused(lambda: model(rd3_unknown_key=1), "extra_forbidden"):
        problems.append(
            f"config: {model.__name__} accepts an unknown key (a typo in a protocol would pass silently); {fix}"
        )
    recorded = config.model_dump(mode="json")
    try:
        same = model.model_validate(recorded) == config
    except ValidationError:
        same = False
    if not same:
        problems.append(
            f"config: the recorded form of the config ({recorded}) does not validate back to the same config; "
            "use JSON-friendly field types (numbers, strings, booleans, tuples, nested frozen models)"
        )
    return problems


def _refused(action: Callable[[], object], error: str) -> bool:
    """Whether `action` fails pydantic validation with an error of type `error`."""
    try:
        action()
    except ValidationError as exc:
        return any(e["type"] == error for e in exc.errors())
    except ValueError:  # e.g. setting an attribute a model without fields does not have
        return False
    return False


def _info_problems(info, record) -> tuple[list[str], list[str]]:
    problems, notes = [], []
    if "\n" in info.summary.strip():
        problems.append("method_info: summary must be one line (`rd3h plugins` shows it in a table)")
    if info.paper is not None and not str(info.paper).startswith(("https://", "http://")):
        problems.append(f"method_info: paper must be a URL (https://...), not {info.paper!r}")
    for flag in ("needs_teacher", "needs_real_data"):
        if not isinstance(getattr(info, flag), bool):
            problems.append(f"method_info: {flag} must be True or False")
    if not record.builtin and record.distribution != f"rd3-plugin-{record.name}":
        notes.append(
            f"naming: distribution {record.distribution!r} does not follow the convention `rd3-plugin-{record.name}`"
        )
    return problems, notes


def _raised_at(exc: BaseException | None) -> str:
    """` (at file:line in function)`: where in the plugin's code `exc` was raised, or ''."""
    frame = None if exc is None else _outside(traceback.extract_tb(exc.__traceback__))
    return f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})" if frame else ""


def _outside(frames: list[traceback.FrameSummary]) -> traceback.FrameSummary | None:
    """The innermost frame that is neither torch's nor the harness's (the plugin's code)."""
    skip = tuple(str(Path(m.__file__).parent) for m in (torch, hookspecs))
    return next((f for f in reversed(frames) if not f.filename.startswith(skip)), None)


class _MetaProbe(TorchFunctionMode):
    """Runs plugin code on `meta` tensors as if they held data, and watches where it puts its work.

    Reading a meta tensor (`.item()`, `float()`, `if t:`, `.tolist()`, `.cpu()`, `.numpy()`, formatting)
    gives zeros instead of failing, the way a GPU tensor would give its values, so the run goes on.
    A random draw that pins a generator of one device to tensors of another is recorded: `ctx.generator`
    is a CPU generator, and `torch.randn(..., generator=ctx.generator, device='cuda')` fails on a GPU.
    """

    READS = {Tensor.item: None, Tensor.__bool__: bool, Tensor.__float__: float, Tensor.__int__: int}

    def __init__(self) -> None:
        super().__init__()
        self.draws: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._watch_generator(func, args, kwargs)
        t = args[0] if args and isinstance(args[0], Tensor) else None
        if t is None or not t.is_meta:
            return func(*args, **kwargs)
        zeros = functools.partial(torch.zeros, t.shape, dtype=t.dtype)
        if func in self.READS:
            value = zeros().item()
            return value if self.READS[func] is None else self.READS[func](value)
        if func is Tensor.__index__:
            return 0
        if func is Tensor.__format__:
            return format(zeros().item() if t.dim() == 0 else t, *args[1:])
        if func is Tensor.tolist:
            return zeros().tolist()
        if func is Tensor.numpy:
            return zeros().numpy()
        if func is Tensor.cpu:
            return zeros()
        if func is Tensor.to:
            device, dtype, _, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
            if device is not None and device.type == "cpu":
                return torch.zeros(t.shape, dtype=dtype or t.dtype)
        return func(*args, **kwargs)

    def _watch_generator(self, func, args, kwargs) -> None:
        gen = kwargs.get("generator")
        if not isinstance(gen, torch.Generator):
            return
        target = kwargs.get("device")
        if target is None and args and isinstance(args[0], Tensor):
            target = args[0].device
        if target is None or torch.device(target).type == gen.device.type:
            return
        frame = _outside(traceback.extract_stack())
        where = f"{getattr(func, '__name__', func)} at {Path(frame.filename).name}:{frame.lineno}" if frame else "?"
        if all(not d.startswith(where) for d in self.draws):
            self.draws.append(
                f"{where} draws on {torch.device(target)} (ctx.device) with a {gen.device} generator, which fails on a GPU"
            )


class _ProbeTimeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise _ProbeTimeout in the block after `seconds` (main thread on Unix, when no other timer such
    as pytest-timeout's runs; otherwise no limit)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        yield
        return

    def expire(signum, frame):  # noqa: ARG001
        raise _ProbeTimeout(f"it ran past {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_MISMATCH = ("expected device", "same device", "device type for generator")


def _device_probe(workspace, record, config: BaseModel, plugins, seconds: float) -> tuple[list[str], list[str]]:
    """Run `synthesize` once more with `ctx.device` = meta under `_MetaProbe`: every tensor it returns
    must be on meta, and no operation may mix meta tensors with tensors made elsewhere (on a GPU
    that mix fails). Returns (problems, notes)."""
    info, meta = record.method, torch.device("meta")
    impl = next(i for i in plugins.pm.hook.synthesize.get_hookimpls() if i.plugin_name == record.name and not i.wrapper)
    fix = "create every tensor with device=ctx.device (or move it there with .to(ctx.device))"
    probe = _MetaProbe()
    problems, notes = [], []
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
        ctx = make_context(
            workspace,
            config,
            workdir=Path(tmp) / "work",
            cache_dir=Path(tmp) / "cache",
            method=record.name,
            real_data=info.needs_real_data,
            teacher=info.needs_teacher,
            device=meta,
        )
        try:
            with _deadline(seconds), probe:
                result = impl.function(*[{"ctx": ctx}[a] for a in impl.argnames])
        except Exception as exc:  # noqa: BLE001 - the plugin's own failure is what we classify
            first = textwrap.shorten((str(exc).strip().splitlines() or [type(exc).__name__])[0], 160)
            if any(m in first for m in _MISMATCH):
                problems.append(
                    f"device: with ctx.device = meta, synthesize mixes devices: {first}{_raised_at(exc)}; {fix}"
                )
            else:
                notes.append(
                    f"device: the meta-device run stopped early ({type(exc).__name__}: {first}{_raised_at(exc)}), "
                    "so device placement was checked on the test device only; for a full check run "
                    f"`rd3h plugin check {record.name} --device cuda` on a GPU"
                )
        else:
            tensors = [(n, getattr(result, n, None)) for n in ("images", "labels", "soft_labels")]
            wrong = [f"{n} on {t.device}" for n, t in tensors if isinstance(t, Tensor) and t.device != meta]
            if wrong:
                problems.append(f"device: with ctx.device = meta, synthesize returned {', '.join(wrong)}; {fix}")
    problems += [
        f"device: {d}: draw on CPU and move (`torch.randn(..., generator=ctx.generator).to(ctx.device)`)"
        for d in probe.draws
    ]
    return problems, notes


def _synthesize(plugins, workspace, name: str, overrides: dict[str, Any], report: Conformance):
    from rd3_harness.runner import synthesize

    started = time.perf_counter()
    try:
        result = synthesize(plugins, workspace, name, overrides, reuse=False)
    except PluginFailure as exc:
        hint = (
            "; return exactly ctx.ipc images per class: images float [N, C, H, W] in model-input space, "
            "labels int64 [N] in [0, num_classes)"
            if "invalid synthetic set" in str(exc)
            else ""
        )
        report.problems.append(f"synthesize: {exc}{_raised_at(exc.__cause__)}{hint}")
        return None
    except UsageError as exc:
        report.problems.append(f"synthesize: {exc}{_raised_at(exc)}")
        return None
    report.synthesis_s.append(time.perf_counter() - started)
    return result


def _placement_problems(synset: SyntheticSet, device: torch.device) -> list[str]:
    wrong = [
        f"{n} are on {t.device}"
        for n, t in (("images", synset.images), ("labels", synset.labels), ("soft_labels", synset.soft_labels))
        if t is not None and not _placed(t, device)
    ]
    if not wrong:
        return []
    return [f"device: {', '.join(wrong)}, not on ctx.device ({device}); create them with device=ctx.device"]


def _determinism_problems(a: SyntheticSet, b: SyntheticSet, seed: int) -> list[str]:
    diffs = []
    for n in ("images", "labels", "soft_labels"):
        x, y = getattr(a, n), getattr(b, n)
        if x is None and y is None:
            continue
        if x is None or y is None or x.shape != y.shape:
            diffs.append(f"{n} differ in shape")
        elif not torch.equal(x, y):
            differ = x != y
            detail = f"{n}: {int(differ.sum())} of {x.numel()} values differ"
            if x.is_floating_point():
                detail += f", by up to {float((x - y).abs().max()):.3g}"
            diffs.append(detail)
    if not diffs:
        return []
    return [
        f"determinism: two syntheses with seed {seed} differ ({'; '.join(diffs)}). Draw all randomness from "
        "ctx.generator (e.g. `torch.randn(..., generator=ctx.generator)`), not from Python's `random`, NumPy's "
        "global state or the clock; keep no state between calls; avoid nondeterministic kernels"
    ]


def _plugin_object(name: str, record) -> object | None:
    import importlib
    import importlib.metadata

    from rd3_harness.plugins import ENTRY_POINT_GROUP

    try:
        if record.builtin:
            return importlib.import_module(record.module)
        ep = next(iter(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)), None)
        return None if ep is None else ep.load()
    except Exception:  # noqa: BLE001 - the plugin manager has recorded the import failure
        return None


def check_plugin(
    name: str,
    *,
    config: Mapping[str, Any] | None = None,
    workspace=None,
    images_per_class: int | None = SMOKE_IMAGES_PER_CLASS,
    strict: bool = True,
    plugins=None,
) -> Conformance:
    """Check that the installed method plugin `name` keeps the plugin contract, on the smoke protocol:

    - hooks: each @hookimpl names a hookspec and asks only for its arguments; functions named like
      hooks carry @hookimpl; the plugin manager loads it (what `rd3h plugins` shows);
    - method_info: complete, named like the entry point; its config model is frozen, forbids unknown
      keys, and a config survives the JSON form in which results record it;
    - synthesize, as `rd3h run` calls it: the core's `validate_synthetic_set` holds (IPC per class,
      shape, dtype, finite, label range); outputs are on `ctx.device`; a second synthesis with the
      same seed gives identical tensors; a third with `ctx.device` = meta keeps every tensor there.

    `config`: overrides that make synthesis fast (default: the module's `SMOKE_CONFIG`, else none).
    `workspace`: the smoke workspace (fixture `smoke_workspace`); None opens it with default settings.
    `images_per_class`: real training images per class the plugin sees (None: all).
    `plugins`: the loaded `Plugins` (default: the process-wide set).
    Returns the report; unless `strict=False`, raises ConformanceError listing every problem.
    """
    from rd3_harness.plugins import get_plugins
    from rd3_harness.synthesis import parse_config

    report = Conformance(name)
    plugins = plugins or get_plugins()
    record = plugins.records.get(name)
    if record is None:
        report.problems.append(
            f"load: no plugin named {name!r} is installed (installed: {', '.join(sorted(plugins.records))}); "
            f"`pip install -e .` a package whose pyproject.toml declares `[project.entry-points.rd3_harness]` "
            f'`{name} = "rd3_plugin_{name.replace("-", "_")}"` (and check RD3_LOAD_PLUGINS)'
        )
        return _finish(report, strict)
    plugin = _plugin_object(name, record)
    if plugin is not None:
        report.problems += hook_problems(plugin)
    if record.error and not report.problems:
        report.problems.append(f"load: `rd3h plugins` marks it broken: {record.error}")
    if not report.problems and record.method is None:
        report.problems.append(
            "load: not a method plugin: implement `@hookimpl def method_info()` and `@hookimpl def synthesize(ctx)`"
        )
    report.notes += [f"load: {w}" for w in record.warnings]
    if report.problems:
        return _finish(report, strict)
    info = record.method
    problems, notes = _info_problems(info, record)
    report.problems += problems
    report.notes += notes
    report.config = dict(config if config is not None else getattr(plugin, SMOKE_CONFIG_ATTRIBUTE, None) or {})
    try:
        parsed = parse_config(info, report.config)
    except UsageError as exc:
        source = "the config given" if config is not None else SMOKE_CONFIG_ATTRIBUTE
        report.problems.append(f"config: {source} does not validate: {exc}")
        return _finish(report, strict)
    report.problems += config_problems(info.config_model, parsed)
    if workspace is None:
        from rd3_harness.workspace import open_workspace

        workspace = open_workspace(plugins.registries, SMOKE_PROTOCOL, Settings())
    view = _with_real_slice(workspace, images_per_class)
    first = _synthesize(plugins, view, name, report.config, report)
    if first is None:
        return _finish(report, strict)
    report.problems += _placement_problems(first.synset, workspace.settings.torch_device)
    second = _synthesize(plugins, view, name, report.config, report)
    if second is not None:
        report.problems += _determinism_problems(first.synset, second.synset, workspace.protocol.synthesis_seed)
    problems, notes = _device_probe(view, record, parsed, plugins, seconds=max(30.0, 3 * max(report.synthesis_s)))
    report.problems += problems
    report.notes += notes
    if report.synthesis_s and min(report.synthesis_s) > 20:
        advice = "make its overrides faster" if hasattr(plugin, SMOKE_CONFIG_ATTRIBUTE) else "expose it"
        report.notes.append(
            f"speed: a smoke synthesis takes {min(report.synthesis_s):.0f} s; `{SMOKE_CONFIG_ATTRIBUTE}` holds config "
            f"overrides that keep this check cheap in CI: {advice}"
        )
    return _finish(report, strict)


def _with_real_slice(workspace, per_class: int | None):
    """The workspace with a slice of its training set; teachers still come from the full set."""
    if per_class is None:
        return workspace
    view = copy.copy(workspace)
    view.train = real_slice(workspace.train, per_class)
    view.teacher = workspace.teacher  # trained on (and cached for) the full training set
    return view


def _finish(report: Conformance, strict: bool) -> Conformance:
    if strict and report.problems:
        raise ConformanceError(str(report))
    return report
