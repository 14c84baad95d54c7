"""sayno: teach CLIP to say "no" (CLIPGlasses and CLIPN for any CLIP)."""
__version__ = "0.1.0"

from sayno.backbones import load

__all__ = ["__version__", "load"]
