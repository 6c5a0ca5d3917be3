"""Generation-based dataset distillation for rd3-harness: D4M (Su et al., CVPR 2024) and Minimax
(Gu et al., CVPR 2024) on a latent diffusion model.

Two entry points, `d4m` (`rd3_plugin_generative.d4m`) and `minimax`
(`rd3_plugin_generative.minimax`). Both run on one generator asset: a small AutoencoderKL +
class-conditional UNet2DModel trained from scratch on the protocol's training set, cached and
shared (`generator.py`), or on real diffusers weights given with `--config model_path=DIR`
(`local.py`). Importing this package or its entry modules does not import torch or diffusers.
"""

__version__ = "0.1.0"
