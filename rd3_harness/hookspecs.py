"""The plugin contract: hook specifications, documented hook by hook.

Hooks take only the arguments they name (pluggy opt-in arguments): an implementation may declare
a subset of a spec's arguments, so the core can add arguments without breaking plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from rd3_harness.contract import MethodInfo, SynthesisContext, SyntheticSet
    from rd3_harness.protocol.schema import Protocol
    from rd3_harness.results.record import Run, RunRecord

hookspec = pluggy.HookspecMarker("rd3_harness")
hookimpl = pluggy.HookimplMarker("rd3_harness")


@hookspec
def method_info() -> MethodInfo:
    """Describe the method this plugin provides: name, summary, config model and needs.

    Required of every plugin that implements `synthesize`; the name must equal the entry-point
    name under which the plugin is installed.
    """


@hookspec(firstresult=True)
def synthesize(ctx: SynthesisContext) -> SyntheticSet:
    """Make `ctx.ipc` images per class and return them as a `SyntheticSet`.

    Only the selected plugin's implementation is called, inside a core wrapper that seeds, times
    and validates. Use `ctx.generator` for randomness, `ctx.device` for placement and
    `ctx.progress` for progress; return images in model-input (normalized) space.
    """


@hookspec
def register_datasets(register: Callable) -> None:
    """Register datasets: call `register(DatasetInfo(...))` once per dataset."""


@hookspec
def register_models(register: Callable) -> None:
    """Register architectures: call `register(name, factory, description=...)`, where
    `factory(num_classes=..., in_channels=..., resolution=...)` returns an `nn.Module`."""


@hookspec
def register_protocols(register: Callable) -> None:
    """Register protocol files: call `register(name, path)` for each (for example a method's
    legacy evaluation recipe), so `--protocol name` finds it."""


@hookspec
def run_started(run: Run, protocol: Protocol) -> None:
    """Observe the start of an evaluation: the run (its id, protocol hash, plugin, synthetic set)
    and the frozen protocol. Observers receive copies and cannot change a result."""


@hookspec
def epoch_finished(run: Run, student: str, seed: int, epoch: int, metrics: dict[str, float]) -> None:
    """Observe one training epoch of a student x seed: `epoch` counts from 1; `metrics` holds
    `loss` (mean training loss of the epoch), `lr` and `images_per_s`. Only called when some
    plugin implements it."""


@hookspec
def evaluation_finished(run: Run, record: RunRecord) -> None:
    """Observe one finished student x seed: the record as stored (accuracy, cost, flags)."""


@hookspec
def run_finished(run: Run, records: list[RunRecord]) -> None:
    """Observe the end of an evaluation (status `complete` or `failed`) with all its records."""
