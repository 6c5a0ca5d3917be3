"""Breaks the contract: `synthesize` asks for an argument the hook does not pass."""

from rd3_kit_fakes import info

from rd3_harness import hookimpl


@hookimpl
def method_info():
    return info("kit-badarg")


@hookimpl
def synthesize(ctx, steps):
    raise AssertionError("never called")
