"""comfyjobs: run ComfyUI workflows behind a typed job API.

The curated public surface is small on purpose: settings, the manifest registry and the error types.
Everything else is an implementation module.
"""

from comfyjobs.errors import ComfyJobsError
from comfyjobs.settings import Settings

__all__ = ["ComfyJobsError", "Settings"]
__version__ = "0.1.0"
