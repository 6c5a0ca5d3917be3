"""Breaks the contract: a hookimpl whose name is no hook's."""

from rd3_kit_fakes import info

from rd3_harness import hookimpl


@hookimpl
def method_info():
    return info("kit-typo")


@hookimpl
def synthesise(ctx):
    raise AssertionError("never called")
