"""Breaks the contract: `synthesize` without `method_info`."""

from rd3_harness import hookimpl


@hookimpl
def synthesize(ctx):
    raise AssertionError("never called")
