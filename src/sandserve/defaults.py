"""What sandserve picks when the user names nothing: the engine of a model without a preset, and the preset
each provider serves. Apart from the preset table (``presets``) so that an Endpoint and a provider, which the
ledger loads for every `ls`, name them without building the table."""

from __future__ import annotations

#: The engine of a Hugging Face model with no preset (and of an endpoint from the environment, until its
#: server says otherwise).
DEFAULT_ENGINE = "sglang"
#: The preset each provider serves when no model is named (both are in ``presets.PRESETS``).
DEFAULT_DAYTONA_PRESET = "gpt-oss-20b"
DEFAULT_LOCAL_PRESET = "smollm2-135m"
