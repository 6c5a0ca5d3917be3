"""`rd3h plugin new NAME`: a new method plugin package that installs, passes the kit's checks and runs.

The templates are string constants (so a wheel install finds them), filled with `string.Template`.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from rd3_harness.errors import UsageError

NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
MAX_NAME = 40

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "${dist}"
version = "0.1.0"
description = "${name}: a dataset-distillation method as an rd3-harness plugin"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["rd3-harness>=${harness_version}", "torch", "pydantic>=2.6"]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.entry-points.rd3_harness]
${name} = "${module}"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.ruff]
line-length = 120
src = ["src"]

[tool.ruff.lint]
select = ["E", "F", "I", "UP", "B"]
"""

MODULE = '''\
"""rd3-harness plugin `${name}`.

The `synthesize` below is a simple, honest starting point that really works: each synthetic image
is the mean of a few real images of its class, refined by nothing. Replace it with your method,
put your method's settings in `Config`, and keep `pytest` passing (see CONTRIBUTING.md of
rd3-harness, "Writing a plugin").
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field
from rd3_harness import MethodInfo, SynthesisContext, SyntheticSet, hookimpl

SMOKE_CONFIG = {"images_per_mean": 2}
"""Config overrides that make a synthesis on the smoke protocol fast (read by `check_plugin`)."""


class Config(BaseModel, frozen=True, extra="forbid"):
    """Settings of `${name}`: set them in a protocol or with `rd3h run --config key=value`."""

    images_per_mean: int = Field(default=8, ge=1, description="real images averaged into each synthetic image")


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="${name}",
        summary="Class means: each image averages a few real images of its class (template method)",
        config_model=Config,
        needs_teacher=False,
        needs_real_data=True,
    )


@hookimpl
def synthesize(ctx: SynthesisContext) -> SyntheticSet:
    """Make `ctx.ipc` images per class, each the mean of `images_per_mean` distinct real images of
    its class drawn with `ctx.generator`; nothing refines them.

    Replace this body with your method (set `needs_teacher=True` in `method_info` to get
    `ctx.teacher`). Keep to the contract: draw randomness only from `ctx.generator` (a CPU
    generator), put tensors on `ctx.device`, and return exactly `ctx.ipc` images per class in
    model-input (normalized) space with int64 labels.
    """
    images = []
    with ctx.progress(ctx.num_classes, "${name}: class means") as task:
        for c in range(ctx.num_classes):
            k = max(1, min(ctx.config.images_per_mean, len(ctx.real_data.class_indices(c)) // ctx.ipc))
            real = ctx.real_data.sample(c, ctx.ipc * k, generator=ctx.generator)  # normalized, on ctx.device
            images.append(real.view(ctx.ipc, k, *ctx.image_shape).mean(dim=1))
            task.advance()
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    return SyntheticSet(images=torch.cat(images), labels=labels)
'''

TESTS = '''\
"""Tests of `${name}` with the rd3-harness plugin kit (its fixtures come with rd3-harness)."""

from __future__ import annotations

from rd3_harness.testing import check_plugin

from ${module} import SMOKE_CONFIG, Config, synthesize


def test_plugin_conforms(smoke_workspace):
    """Hooks match their specs, method_info is complete, output is valid, deterministic and on ctx.device."""
    check_plugin("${name}", workspace=smoke_workspace, config=SMOKE_CONFIG)


def test_one_image_per_mean_is_a_real_image_of_its_class(smoke_context):
    ctx = smoke_context(Config(images_per_mean=1))
    result = synthesize(ctx)
    for image, label in zip(result.images, result.labels, strict=True):
        real = ctx.real_data.get(ctx.real_data.class_indices(int(label)))
        assert (real == image).flatten(1).all(1).any()
'''

README = """\
# ${dist}

`${name}`: a dataset-distillation method as a plugin of rd3-harness, which evaluates it under
frozen, hashed protocols.

## Install and run

```bash
pip install -e .                                   # registers the plugin `${name}`
rd3h plugins                                       # lists it
rd3h run --plugin ${name} --protocol cpu/smoke.v1  # synthesize, evaluate, record (about a minute on CPU)
rd3h run --plugin ${name} --config images_per_mean=4
```

## Develop

The method lives in `src/${module}/__init__.py`: `method_info` describes it, `Config` holds its
settings (frozen, unknown keys refused), `synthesize(ctx)` makes the images. `SMOKE_CONFIG` holds
config overrides that keep the conformance check fast.

```bash
pytest                     # the kit's conformance check and this plugin's own tests
rd3h plugin check ${name}  # the same conformance check from the command line
```

## Publish

```bash
python -m build && twine upload dist/*
```
Users then `pip install ${dist}` and run `rd3h run --plugin ${name}`.
"""

FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "src/${module}/__init__.py": MODULE,
    "tests/test_${module}.py": TESTS,
}


def validate_name(name: str) -> str:
    """The method name, or a UsageError that says what a valid one looks like."""
    from rd3_harness.plugins import DEFAULT_PLUGINS

    if name.startswith(("rd3-plugin-", "rd3_plugin_")):
        raise UsageError(f"plugin name {name!r}: give the method name only, e.g. {name[11:]!r}")
    if not NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise UsageError(
            f"plugin name {name!r}: use lowercase letters and digits, starting with a letter, words joined by "
            f"single hyphens, at most {MAX_NAME} characters (e.g. 'mymethod' or 'my-method')"
        )
    if name in DEFAULT_PLUGINS:
        raise UsageError(f"plugin name {name!r} is taken by a built-in plugin; choose another")
    return name


def plugin_files(name: str) -> dict[str, str]:
    """Relative path -> content of the package of method `name`."""
    from rd3_harness.version import __version__

    values = {
        "name": name,
        "dist": f"rd3-plugin-{name}",
        "module": f"rd3_plugin_{name.replace('-', '_')}",
        "harness_version": __version__,
    }
    return {Template(path).substitute(values): Template(text).substitute(values) for path, text in FILES.items()}


def scaffold(name: str, parent: Path) -> Path:
    """Write `parent/rd3-plugin-NAME/` and return it; refuses to touch an existing folder."""
    validate_name(name)
    folder = parent / f"rd3-plugin-{name}"
    if folder.exists():
        raise UsageError(f"{folder} already exists; remove it or pick another --dir")
    for relative, text in plugin_files(name).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder
