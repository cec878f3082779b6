"""spikemoe: spiking transformers with mixtures of spiking experts (SEMM)."""
from importlib.metadata import PackageNotFoundError, version

from .models import ModelOutput, create_model, list_models, register_model

try:
    __version__ = version("spikemoe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["ModelOutput", "__version__", "create_model", "list_models", "register_model"]
