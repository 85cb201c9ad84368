"""sandserve: serve LLMs on GPU sandboxes with SGLang (or locally with llama.cpp), and use them."""

from __future__ import annotations

from .connect import connect
from .endpoint import Endpoint
from .lifecycle import BootEvents, up
from .spec import AuthMode, ServeSpec, resolve_spec

__all__ = ["AuthMode", "BootEvents", "Endpoint", "ServeSpec", "connect", "resolve_spec", "up"]
