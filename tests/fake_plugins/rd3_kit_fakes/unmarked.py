"""Breaks the contract: `synthesize` lacks the @hookimpl marker."""

from rd3_kit_fakes import info

from rd3_harness import hookimpl


@hookimpl
def method_info():
    return info("kit-unmarked")


def synthesize(ctx):
    raise AssertionError("never called")
