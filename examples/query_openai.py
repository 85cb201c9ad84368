"""The guide's OpenAI SDK tour on the current endpoint (`python examples/query_openai.py [ENDPOINT_ID]`):
chat, streaming, reasoning effort, structured output, a regex on /generate, tool calling, the prefix cache.

The endpoint comes from `sandserve.connect()`: ENDPOINT/TOKEN in the environment, else the ledger. Every
endpoint speaks SGLang's shapes, so the guide's attribute access (`delta.reasoning_content`,
`message.reasoning_content`) and its exact haiku schema work as written. A feature the model lacks (reasoning
effort on SmolLM2, tools on a chat template without them) is said to be "not available on this model". On the
tiny random-weight model (tests only) the text is gibberish and the tool call is forced; `sandserve tour` runs
the same checks.
"""

import json
import sys
import time

import sandserve
from sandserve.client.chat import reasoning_plan
from sandserve.tools.sandboxes import tool_runner_for
from sandserve.workloads.tour import bounded_haiku_schema, get_weather, settings_for

endpoint = sandserve.connect(sys.argv[1] if len(sys.argv) > 1 else None)
client = endpoint.openai()
model = endpoint.model
settings = settings_for(endpoint)  # smaller budgets on a CPU
tiny = settings.random_model  # the local random-weight model: small budgets, forced tool call
budget = 64 if tiny else settings.max_tokens


def ask(content: str, **kwargs):
    messages = [{"role": "user", "content": content}]
    return client.chat.completions.create(model=model, messages=messages, **kwargs)


print("== chat")
reply = ask("Write a haiku about a sandbox where AI agents run code.", max_tokens=budget)
print(reply.choices[0].message.content)

print("\n== streaming (reasoning first, then the answer)")
for chunk in ask("Write ten haikus about tokens arriving one at a time.", max_tokens=2 * budget, stream=True):
    delta = chunk.choices[0].delta if chunk.choices else None
    if delta is not None:
        print(delta.reasoning_content or delta.content or "", end="", flush=True)

print("\n\n== reasoning effort (gpt-oss: low/medium/high; Qwen3: thinking on/off)")
try:
    plan = reasoning_plan(endpoint, "high")  # {"reasoning_effort": "high"} on gpt-oss, as in the guide
except sandserve.CapabilityError as exc:
    print(f"not available on this model: {exc.message}")
else:
    reply = ask(
        "Write a haiku about thinking before speaking.", extra_body=plan.params, max_tokens=2 * budget
    )
    message = reply.choices[0].message
    print("reasoning:", message.reasoning_content)
    print("answer:", message.content)

print("\n== structured output: the reply always parses")
schema = {  # the guide's schema, unchanged
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3},
        "season": {"type": "string"},
    },
    "required": ["title", "lines", "season"],
}
if settings.bounded_strings:  # a small model on a CPU: strings of at most 40 characters, so it ends soon
    schema = bounded_haiku_schema()
reply = ask(
    "Compose a haiku about GPU sandboxes, as JSON with title, lines, and season.",
    response_format={"type": "json_schema", "json_schema": {"name": "haiku", "schema": schema}},
    max_tokens=settings.schema_max_tokens,
)
if reply.choices[0].finish_reason == "length":  # a small model can run a free string to the limit
    print("cut at max_tokens: not a whole answer (raise max_tokens, or ask again)")
else:
    print(json.loads(reply.choices[0].message.content))

print("\n== a regex (SGLang's /generate; compiled to a grammar on llama.cpp)")
print(repr(endpoint.generate("The best color for a terminal theme is", regex=" (red|green|blue|amber)").text))

print("\n== tool calling: the standard loop, each call run isolated")
if not endpoint.capabilities().tool_calls:
    print(f"not available on this model: {endpoint.model}'s chat template declares no tools")
else:
    with tool_runner_for(endpoint) as runner:  # a Daytona CPU sandbox for Daytona endpoints, else bubblewrap
        question = [{"role": "user", "content": "Write a haiku about the current weather in Lisbon."}]
        result = sandserve.run_tool_loop(
            endpoint,
            question,
            [sandserve.tool(get_weather)],
            runner,
            force_tool="get_weather" if tiny else None,
            max_tokens=budget,
        )
    for call in result.calls:
        print(f"{call.name}({call.arguments}) -> {call.result}")
    print(result.answer)

print("\n== prefix cache")
context = "The Daytona platform provides isolated sandboxes for AI agents to safely execute code. " * 60
for attempt in (1, 2):
    started = time.perf_counter()
    response = ask(context + "Summarize the above in one sentence.", max_tokens=32)
    print(f"attempt {attempt}: {time.perf_counter() - started:.2f}s, {endpoint.cache_stats(response)}")
