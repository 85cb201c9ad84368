"""Each engine answers for its own dialect (constraints, raw generation, the reasoning dial, forcing a tool
call), and engines find themselves by name, by model form and by what their /v1/models says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandserve.client.chat import reasoning_plan
from sandserve.client.constrained import chat_constraint_params
from sandserve.endpoint import Endpoint
from sandserve.engines import ENGINE_NAMES, Engine, engine_class, engine_for_model, engine_owning, get_engine
from sandserve.errors import CapabilityError, ConfigError, ModelFileNotFoundError
from sandserve.results import Constraint
from sandserve.serve.plan import plan
from sandserve.serve.resolve import resolve_spec


def _endpoint(engine: str, model: str = "someorg/unknown-model") -> Endpoint:
    return Endpoint(id="e", url="http://127.0.0.1:1", model=model, engine=engine)


def test_builtin_engines_are_registered_by_name() -> None:
    assert {name: engine_class(name).name for name in ENGINE_NAMES} == {
        "sglang": "sglang",
        "llamacpp": "llamacpp",
    }
    with pytest.raises(ConfigError, match="Unknown engine 'vllm'") as caught:
        get_engine("vllm")
    assert "llamacpp" in (caught.value.hint or "") and "sglang" in (caught.value.hint or "")


def test_a_new_engine_registers_itself() -> None:
    class Echo(Engine):
        name = "echo-for-test"
        label = "Echo"
        owned_by = "echo-for-test"

        @classmethod
        def claims_model(cls, model: str) -> bool:
            return model.endswith(".echo")

    try:
        assert engine_class("echo-for-test") is Echo
        assert engine_for_model("weights.echo", "sglang") == "echo-for-test"
        assert engine_owning("ECHO-for-test") == "echo-for-test"
    finally:
        del Engine.registered["echo-for-test"]


def test_engines_are_found_by_model_form_and_owner() -> None:
    assert engine_for_model("/models/q4.gguf", "sglang") == "llamacpp"
    assert engine_for_model("Qwen/Qwen3-8B", "sglang") == "sglang"
    assert (engine_owning("sglang"), engine_owning("llamacpp"), engine_owning("openai")) == (
        "sglang",
        "llamacpp",
        None,
    )


def test_regex_and_ebnf_go_as_each_engine_reads_them() -> None:
    regex = Constraint("regex", "(red|green)")
    sglang = chat_constraint_params(_endpoint("sglang"), regex)
    assert sglang == {"extra_body": {"regex": "(red|green)"}}
    llamacpp = chat_constraint_params(_endpoint("llamacpp"), regex)
    assert llamacpp["extra_body"]["chat_template_kwargs"] == {"enable_thinking": False}
    assert "root ::=" in llamacpp["extra_body"]["grammar"] and "regex" not in llamacpp["extra_body"]
    ebnf = chat_constraint_params(_endpoint("llamacpp"), Constraint("ebnf", 'root ::= "a"'))
    assert ebnf["extra_body"]["grammar"] == 'root ::= "a"'


def test_a_json_schema_is_response_format_on_every_engine() -> None:
    schema = {"type": "object"}
    for engine in ENGINE_NAMES:
        params = chat_constraint_params(_endpoint(engine), Constraint("json_schema", schema))
        assert params["response_format"]["json_schema"]["schema"] == schema


def test_raw_generation_routes() -> None:
    sampling = {"max_new_tokens": 8, "temperature": 0.0}
    sglang = get_engine("sglang").generate_call(
        "m", "Hi", Constraint("json_schema", {"type": "string"}), sampling
    )
    assert sglang.path == "/generate"
    assert json.loads(sglang.body["sampling_params"]["json_schema"]) == {"type": "string"}
    llamacpp = get_engine("llamacpp").generate_call("m", "Hi", Constraint("regex", "[0-9]+"), sampling)
    assert llamacpp.path == "/v1/completions"
    assert (
        llamacpp.body["max_tokens"] == 8
        and llamacpp.body["temperature"] == 0.0
        and "grammar" in llamacpp.body
    )


def test_reading_a_generation() -> None:
    sglang = get_engine("sglang").read_generation(
        {"text": "ab", "meta_info": {"finish_reason": {"type": "length"}}}
    )
    assert sglang == ("ab", "length")
    llamacpp = get_engine("llamacpp").read_generation({"choices": [{"text": "x", "finish_reason": "stop"}]})
    assert llamacpp == ("x", "stop")


def test_reasoning_effort_for_an_unknown_family_is_the_engines_call() -> None:
    plan_ = reasoning_plan(_endpoint("sglang"), "high")
    assert plan_.params == {"reasoning_effort": "high"} and plan_.note
    with pytest.raises(CapabilityError, match="llamacpp engine") as caught:
        reasoning_plan(_endpoint("llamacpp"), "high")
    assert "gpt-oss" in (caught.value.hint or "")


def test_brief_answers() -> None:
    assert get_engine("sglang").brief_answer_fields() == {"reasoning_effort": "low"}
    assert get_engine("llamacpp").brief_answer_fields() == {
        "chat_template_kwargs": {"enable_thinking": False}
    }


def _spec(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }


def test_forcing_a_tool_call() -> None:
    params = {"model": "m", "messages": [], "max_tokens": 16}
    sglang = get_engine("sglang").force_tool_call(params, "weather", [_spec("weather")], lambda text: [])
    assert sglang["tool_choice"] == {"type": "function", "function": {"name": "weather"}}

    ids = {"<tool_call>": [{"id": 7}], "</tool_call>": [8]}
    llamacpp = get_engine("llamacpp").force_tool_call(params, "weather", [_spec("weather")], ids.__getitem__)
    assert llamacpp["logit_bias"] == {"7": 100, "8": -100} and llamacpp["max_tokens"] == 256
    city = llamacpp["tools"][0]["function"]["parameters"]["properties"]["city"]
    assert city["pattern"].startswith("^[A-Za-z0-9")
    assert get_engine("llamacpp").after_forced_call({"a": 1}) == {"a": 1, "tool_choice": "none"}
    assert get_engine("sglang").after_forced_call({"a": 1}) == {"a": 1}

    with pytest.raises(CapabilityError, match="Forcing a tool call"):
        get_engine("llamacpp").force_tool_call(params, "weather", [_spec("weather")], lambda text: [1, 2])


def test_the_local_provider_runs_only_cpu_engines_and_gguf_files_must_exist(tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs a GPU sandbox"):
        resolve_spec("qwen3-8b", provider="local")
    with pytest.raises(ModelFileNotFoundError):
        resolve_spec(str(tmp_path / "missing.gguf"), provider="local")
    model = tmp_path / "real.gguf"
    model.write_bytes(b"GGUF")
    spec = resolve_spec(str(model), provider="local")
    assert (spec.engine, spec.model, spec.boot_timeout) == ("llamacpp", str(model), 120.0)


def test_dry_run_plans_keep_their_shape() -> None:
    local = plan(resolve_spec("tiny", provider="local"))
    assert list(local) == [
        "provider",
        "engine",
        "model",
        "served_name",
        "binary",
        "port",
        "command",
        "env",
        "boot_timeout",
    ]
    assert local["model"].startswith("tiny") and "--host 127.0.0.1" in local["command"]
    remote = plan(resolve_spec("gpt-oss-20b", provider="daytona"))
    assert list(remote)[:4] == ["provider", "engine", "model", "served_name"]
    assert remote["port"] == 8000 and "--host 0.0.0.0" in remote["command"] and "image" in remote
