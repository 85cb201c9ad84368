"""LiteLLM against the current endpoint (`python examples/query_litellm.py [ENDPOINT_ID]`): one reply, then a
streamed one. `endpoint.litellm_kwargs()` carries the model, base URL and auth for every auth mode."""

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download at import

import litellm

import sandserve

litellm.suppress_debug_info = True
endpoint = sandserve.connect(sys.argv[1] if len(sys.argv) > 1 else None)
messages = [{"role": "user", "content": "Write a haiku about a sandbox where AI agents run code."}]

response = litellm.completion(**endpoint.litellm_kwargs(), messages=messages, max_tokens=4096)
print(response.choices[0].message.content)
print(f"({endpoint.cache_stats(response)})")

for chunk in litellm.completion(**endpoint.litellm_kwargs(), messages=messages, max_tokens=4096, stream=True):
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
