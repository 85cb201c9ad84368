"""The llama-server adapter's translations and the local engine's flags (pure functions: no process)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from sandserve.engines.llamacpp import (
    MAX_SLOT_CONTEXT,
    LlamaCppEngine,
    MachineFit,
    busy_cores,
    running_llama_servers,
    threads_per_core,
)
from sandserve.engines.llamacpp_adapter import API_KEY_ENV, _rewrite_sse_line, sglang_shapes
from sandserve.engines.llamacpp_native import BadRequest, completion_body, generate_answer
from sandserve.serve.resolve import resolve_spec


def test_chat_answers_get_sglangs_reasoning_key_and_cache_report():
    answer = {
        "choices": [{"message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    sglang_shapes(answer)
    message = answer["choices"][0]["message"]
    assert "reasoning_content" in message and message["reasoning_content"] is None
    assert answer["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_stream_deltas_keep_reasoning_text_and_turn_empty_into_null():
    chunk = {"choices": [{"delta": {"reasoning_content": "think"}}, {"delta": {"reasoning_content": ""}}]}
    sglang_shapes(chunk)
    assert [c["delta"]["reasoning_content"] for c in chunk["choices"]] == ["think", None]


def test_sse_lines_are_rewritten_one_at_a_time_and_others_pass_untouched():
    line = b'data: {"choices": [{"delta": {"content": "a"}}]}\n'
    rewritten = _rewrite_sse_line(line, sglang_shapes)
    assert json.loads(rewritten.removeprefix(b"data: "))["choices"][0]["delta"] == {
        "content": "a",
        "reasoning_content": None,
    }
    for untouched in (b"data: [DONE]\n", b"\n", b": keep-alive\n"):
        assert _rewrite_sse_line(untouched, sglang_shapes) == untouched


def test_generate_requests_become_completion_requests_with_the_constraint_compiled():
    body = completion_body(
        {"text": "Color:", "sampling_params": {"max_new_tokens": 8, "regex": " (red|blue)", "stop": "\n"}}
    )
    assert body["prompt"] == "Color:" and body["n_predict"] == 8 and body["stop"] == ["\n"]
    assert "red" in body["grammar"] and body["cache_prompt"] is True
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = completion_body({"input_ids": [1, 2], "sampling_params": {"json_schema": json.dumps(schema)}})
    assert body["prompt"] == [1, 2] and body["json_schema"] == schema and body["n_predict"] == 128


@pytest.mark.parametrize(
    "request_body, message",
    [
        ({"sampling_params": {}}, "text or input_ids"),
        ({"text": "x", "sampling_params": {"regex": "a", "ebnf": "root ::= 'a'"}}, "Only one constraint"),
        ({"text": "x", "sampling_params": {"regex": "(?<=a)b"}}, "Failed to compile"),
        ({"text": "x", "sampling_params": {"json_schema": "{not json"}}, "Failed to compile"),
    ],
)
def test_bad_generate_requests_are_refused_with_sglangs_words(request_body, message):
    with pytest.raises(BadRequest, match=message):
        completion_body(request_body)


def test_completion_answers_take_sglangs_generate_shape():
    done = {"content": " red", "stop": True, "stop_type": "eos", "tokens_predicted": 2, "tokens_evaluated": 5}
    answer = generate_answer({**done, "timings": {"cache_n": 4}, "tokens": [7, 8]}, " red", "rid", 0.0)
    assert answer["text"] == " red" and answer["output_ids"] == [7, 8]
    meta = answer["meta_info"]
    assert meta["finish_reason"] == {"type": "stop", "matched": None}
    assert (meta["prompt_tokens"], meta["completion_tokens"], meta["cached_tokens"]) == (5, 2, 4)
    cut = generate_answer({**done, "stop_type": "limit"}, " re", "rid", 0.0)
    assert cut["meta_info"]["finish_reason"] == {"type": "length", "length": 2}
    piece = generate_answer({"content": " r", "stop": False}, " r", "rid", 0.0)
    assert piece["meta_info"]["finish_reason"] is None  # streamed pieces before the last


def flags(fit: MachineFit) -> tuple[int, int, int]:
    return fit.threads, fit.batch_threads, fit.slots


def test_a_lone_server_uses_every_idle_core_and_fleet_workers_divide_them():
    assert flags(MachineFit(cores=2, busy=0, smt=1, others=0)) == (2, 2, 4)
    assert flags(MachineFit(cores=16, busy=0, smt=1, others=0)) == (16, 16, 8)
    assert flags(MachineFit(cores=1, busy=0, smt=1, others=0)) == (1, 1, 2)
    # Servers sharing the machine (a local fleet's workers) each keep to their share, at least one core.
    assert flags(MachineFit(cores=2, busy=0, smt=1, others=0).shared_by(2)) == (1, 1, 2)
    assert flags(MachineFit(cores=16, busy=0, smt=1, others=0).shared_by(4)) == (4, 4, 8)
    assert flags(MachineFit(cores=2, busy=0, smt=1, others=0).shared_by(5)) == (1, 1, 2)
    assert MachineFit(cores=2, busy=0, others=0).shared_by(0) == MachineFit(cores=2, busy=0, others=0)


def test_one_request_decoding_alone_uses_one_thread_a_physical_core():
    assert flags(MachineFit(cores=16, busy=0, smt=2, others=0)) == (8, 16, 8)
    assert flags(MachineFit(cores=2, busy=0, smt=2, others=0)) == (1, 2, 4)
    assert flags(MachineFit(cores=16, busy=4, smt=2, others=0).shared_by(2)) == (3, 6, 8)


def test_cores_other_work_keeps_busy_are_left_to_it_but_the_slots_stay():
    assert flags(MachineFit(cores=2, busy=1, smt=1, others=0)) == (1, 1, 4)
    assert flags(MachineFit(cores=2, busy=12, smt=1, others=0)) == (
        1,
        1,
        4,
    )  # at least one thread, however busy
    assert flags(MachineFit(cores=16, busy=4, smt=1, others=0)) == (12, 12, 8)
    assert flags(MachineFit(cores=16, busy=4, smt=1, others=0).shared_by(2)) == (6, 6, 8)


def test_llama_servers_already_running_share_the_cores_and_a_fleets_own_workers_count_once():
    assert flags(MachineFit(cores=2, busy=0, smt=1, others=1)) == (1, 1, 4)
    assert flags(MachineFit(cores=16, busy=0, smt=1, others=3)) == (4, 4, 8)
    # A fleet's second worker sees the first running: the two still divide the cores in two.
    assert flags(MachineFit(cores=16, busy=0, smt=1, others=1).shared_by(2)) == (8, 8, 8)


def test_running_llama_servers_are_counted_by_their_process_name(tmp_path):
    for pid, name, state in (
        ("101", "llama-server", "S"),
        ("102", "python", "R"),
        ("103", "llama-server", "R"),
        ("105", "llama-server", "Z"),  # ended, not yet reaped: not running
    ):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "stat").write_text(f"{pid} ({name}) {state} 1 {pid} {pid} 0 -1\n")
    (tmp_path / "104").mkdir()  # ended while looked at: no stat
    assert running_llama_servers(tmp_path) == 2
    assert running_llama_servers(tmp_path / "absent") == 0


def test_threads_per_core_reads_the_kernels_topology(tmp_path):
    for siblings, expected in (("0", 1), ("0,8", 2), ("0-1", 2), ("0-3", 4), ("", 1), ("x", 1)):
        (tmp_path / "thread_siblings_list").write_text(siblings + "\n")
        assert threads_per_core(tmp_path) == expected
    assert threads_per_core(tmp_path / "absent") == 1


def test_busy_cores_reads_the_threads_ready_to_run_besides_its_own(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 5\nprocs_blocked 0\n")
    assert busy_cores(looks=3, apart_s=0, stat_file=stat) == 4
    stat.write_text("procs_running 1\n")
    assert busy_cores(looks=1, stat_file=stat) == 0  # only the reader itself
    stat.write_text("cpu  1 2 3\n")
    assert busy_cores(stat_file=stat) == 0  # a system that does not say
    assert busy_cores(stat_file=tmp_path / "absent") == 0


def test_local_launch_puts_the_adapter_in_front_and_no_secret_on_the_command_line(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF\xff\xff")  # a GGUF cut short: no context length in it, the fallback one
    spec = resolve_spec(str(model), provider="local", auth="key")
    launch = LlamaCppEngine(binary="llama-server", fit=MachineFit(cores=2, busy=0, smt=2, others=0)).launch(
        spec, host="127.0.0.1", port=8123, api_key=spec.api_key
    )
    argv = launch.argv
    assert argv[1:3] == ["-m", "sandserve.engines.llamacpp_adapter"] and "--port" in argv
    server = argv[argv.index("--") + 1 :]
    assert server[0] == "llama-server" and "--host" not in server  # the adapter picks its private port
    assert (
        server[server.index("-c") + 1] == str(MAX_SLOT_CONTEXT * 4) and server[server.index("-np") + 1] == "4"
    )
    assert (server[server.index("-t") + 1], server[server.index("-tb") + 1]) == ("1", "2")
    assert spec.api_key and spec.api_key not in " ".join(argv) and launch.env[API_KEY_ENV] == spec.api_key
    assert spec.api_key not in launch.display_env()[API_KEY_ENV]


def test_a_fleet_worker_spec_launches_with_its_share_of_the_cores(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF\xff\xff")
    spec = resolve_spec(str(model), provider="local")
    spec = replace(spec, resources=replace(spec.resources, servers_on_machine=2))
    launch = LlamaCppEngine(binary="llama-server", fit=MachineFit(cores=4, busy=0, smt=1, others=0)).launch(
        spec, host="127.0.0.1", port=8123, api_key=None
    )
    server = launch.argv[launch.argv.index("--") + 1 :]
    assert [server[server.index(flag) + 1] for flag in ("-t", "-tb", "-np")] == ["2", "2", "4"]


def test_the_prompt_step_is_llama_servers_own_or_the_users(tmp_path):
    """The server's prompt step is its default, or what the user gave after ``--``."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF\xff\xff")
    engine = LlamaCppEngine(binary="llama-server", fit=MachineFit(cores=2, busy=0))
    spec = resolve_spec(str(model), provider="local")
    plain = engine.launch(spec, host="127.0.0.1", port=8123, api_key=None).argv
    assert not {"-b", "-ub", "--batch-size", "--ubatch-size"} & set(plain)
    own = replace(spec, engine_settings=replace(spec.engine_settings, extra_args=("-b", "64", "-ub", "64")))
    server = engine.launch(own, host="127.0.0.1", port=8123, api_key=None).argv
    assert server[server.index("-b") + 1] == "64" and server.count("-b") == 1
