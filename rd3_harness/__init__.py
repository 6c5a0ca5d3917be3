"""rd3-harness: fair, reproducible evaluation of decoupled dataset distillation.

The public plugin API is re-exported here; see ARCHITECTURE and CONTRIBUTING for the contract.
"""

__version__ = "0.1.0"

from rd3_harness.errors import UsageError  # noqa: E402
from rd3_harness.hookspecs import hookimpl  # noqa: E402
from rd3_harness.synthesis import MethodInfo, SynthesisContext, SyntheticSet  # noqa: E402

__all__ = ["MethodInfo", "SynthesisContext", "SyntheticSet", "UsageError", "__version__", "hookimpl"]
