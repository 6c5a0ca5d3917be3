"""rd3-harness: fair, reproducible evaluation of decoupled dataset distillation.

The public plugin API (`rd3_harness.api`) is re-exported here and loaded on first use; see
CONTRIBUTING.md, "The public plugin API". Everything else is internal.
"""

from rd3_harness.api import __all__, __dir__, __getattr__, __version__  # noqa: F401
