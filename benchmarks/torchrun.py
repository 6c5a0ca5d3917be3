"""The torchrun launcher the benchmarks and tests start ranks with, on a port nothing else holds."""

from __future__ import annotations

import socket


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launcher(nproc: int) -> list[str]:
    """`python` arguments that run a module under torchrun with `nproc` local ranks."""
    return ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", free_port()]
