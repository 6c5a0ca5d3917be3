"""Breaks the contract: a mutable config model that ignores unknown keys."""

from pydantic import BaseModel
from rd3_kit_fakes import good, info

from rd3_harness import hookimpl


class Config(BaseModel):
    scale: float = 0.1


@hookimpl
def method_info():
    return info("kit-loose", Config, needs_real_data=False)


synthesize = good.synthesize
