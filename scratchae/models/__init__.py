"""The four autoencoders, one paper per file."""
from .aae import AdversarialAutoencoder
from .ae import Autoencoder
from .base import Objective, mlp
from .dae import DenoisingAutoencoder
from .vae import VAE

MODELS = {"ae": Autoencoder, "dae": DenoisingAutoencoder, "vae": VAE, "aae": AdversarialAutoencoder}


def build_model(config: dict, rng):
    """Rebuild a model from its ``config`` (as saved in a checkpoint)."""
    cfg = dict(config)
    cls = MODELS[cfg.pop("kind")]
    cfg.pop("input_dim", None)
    return cls(rng=rng, **cfg)


__all__ = ["Autoencoder", "DenoisingAutoencoder", "VAE", "AdversarialAutoencoder", "Objective",
           "mlp", "MODELS", "build_model"]
