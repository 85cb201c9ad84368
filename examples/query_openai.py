"""The guide's OpenAI SDK tour on the current endpoint (`python examples/query_openai.py [ENDPOINT_ID]`):
chat, streaming, reasoning effort, structured output, a regex on /generate, tool calling, the prefix cache.

The endpoint comes from `sandserve.client.connect()`: the ledger, or ENDPOINT/TOKEN in the environment. Every
endpoint speaks SGLang's shapes, so the guide's attribute access (`delta.reasoning_content`,
`message.reasoning_content`) and its exact haiku schema work as written. On the tiny random-weight model
(tests only) the text is gibberish and the tool call is forced; `sandserve tour` runs the same checks.
"""

import json
import sys
import time

import sandserve
from sandserve.tools.declaration import tool
from sandserve.tools.loop import run_tool_loop
from sandserve.tools.sandboxes import tool_runner_for
from sandserve.workloads.tour import get_weather, settings_for

endpoint = sandserve.client.connect(sys.argv[1] if len(sys.argv) > 1 else None)
client = endpoint.openai()
model = endpoint.model
tiny = settings_for(endpoint).random_model  # the local random-weight model: small budgets, forced tool call
budget = 64 if tiny else 4096


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

print("\n\n== reasoning effort (gpt-oss; `sandserve chat --reasoning-effort` maps other families)")
reply = ask("Write a haiku about thinking before speaking.", reasoning_effort="high", max_tokens=2 * budget)
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
reply = ask(
    "Compose a haiku about GPU sandboxes, as JSON with title, lines, and season.",
    response_format={"type": "json_schema", "json_schema": {"name": "haiku", "schema": schema}},
    max_tokens=4096,
)
if reply.choices[0].finish_reason == "length":  # a small model can run a free string to the limit
    print("cut at max_tokens: not a whole answer (raise max_tokens, or ask again)")
else:
    print(json.loads(reply.choices[0].message.content))

print("\n== a regex (SGLang's /generate; compiled to a grammar on llama.cpp)")
print(repr(endpoint.generate("The best color for a terminal theme is", regex=" (red|green|blue|amber)").text))

print("\n== tool calling: the standard loop, each call run isolated")
with tool_runner_for(endpoint) as runner:  # a Daytona CPU sandbox for Daytona endpoints, else a subprocess
    question = [{"role": "user", "content": "Write a haiku about the current weather in Lisbon."}]
    result = run_tool_loop(
        endpoint,
        question,
        [tool(get_weather)],
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
