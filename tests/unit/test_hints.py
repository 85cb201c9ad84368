"""Every command sandserve prints as advice names a real verb and real flags, and names the program as the
user can run it; -e/--endpoint chooses the endpoint on every verb; a mistyped verb gets "did you mean"."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from fakes import fake_spec

from sandserve.cli import main
from sandserve.cli._app import VERB_MODULES
from sandserve.cli.program import program, runnable
from sandserve.engines import diagnose, get_engine
from sandserve.errors import AmbiguousEndpointError, ConfigError
from sandserve.serve import lifecycle
from sandserve.serve.ledger import FLEET_LABEL, Registry
from sandserve.serve.resolve import resolve_spec
from sandserve.serve.twins import running_twin
from sandserve.spec import EngineSettings, ProviderSettings

SOURCE = Path(__file__).parents[2] / "src" / "sandserve"
#: A command as a message quotes it: `sandserve VERB ...` or "$(sandserve VERB ...)".
QUOTED = re.compile(r"`sandserve ([^`]+)`|\$\(sandserve ([^)]+)\)")


def commands_in(text: str) -> list[str]:
    return [(a or b).strip() for a, b in QUOTED.findall(text)]


def check_command(words_text: str) -> None:
    """The verb (and sub-verb) exists and each option before a bare `--` is one it takes."""
    words = shlex.split(re.sub(r"\{[^}]*\}", " ID", words_text).replace("...", ""))
    words = words[: words.index("|")] if "|" in words else words  # a pipe: the rest is another program
    if words[:1] == ["VERB"]:  # the placeholder of a text about commands in general
        return
    command: click.Command = main
    ctx = click.Context(main)
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        found = command.get_command(ctx, words[0])
        if found is None:
            break
        command, words = found, words[1:]
    takes = {name for param in command.get_params(ctx) for name in getattr(param, "opts", ())}
    if isinstance(command, click.Group):  # a group alone lists its verbs; else only its own options
        assert all(word in takes for word in words), f"`sandserve {words_text}` names no verb"
    for word in words:
        if word == "--":
            break
        if word.startswith("-") and len(word) > 1:
            assert word.split("=")[0] in takes, f"`sandserve {words_text}`: {command.name} has no {word}"


def quoted_in_the_source() -> list[str]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        found += commands_in(path.read_text(encoding="utf-8"))
    return found


def test_the_source_quotes_commands_at_all():
    assert len(quoted_in_the_source()) > 20


@pytest.mark.parametrize("wrong", ["stauts", "up --bogus-flag", "fleet stat", "ls --json --nope"])
def test_the_check_refuses_a_command_that_would_not_run(wrong):
    with pytest.raises(AssertionError):
        check_command(wrong)


@pytest.mark.parametrize("command", sorted(set(quoted_in_the_source())))
def test_each_command_the_source_quotes_names_a_real_verb_and_real_flags(command):
    check_command(command)


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})
    return result.output


def printed_commands(output: str) -> list[str]:
    return commands_in(output.replace(program(), "sandserve"))


def test_the_hints_the_cli_prints_name_real_verbs_and_flags(fake_pipeline, tmp_path):
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("not a model")
    outputs = [
        cli("status", "nosuch"),
        cli("env"),
        cli("fleet", "status"),
        cli("up", "--provider", "local", "--model", "/nowhere/model.gguf", "--dry-run"),
        cli("up", "--provider", "local", "--model", str(not_a_model), "--dry-run"),
        cli("up", "--provider", "local", "--model", "no-such-preset", "--dry-run"),
    ]
    for _ in range(2):
        lifecycle.up(fake_spec())
    outputs.append(cli("env"))  # two are up
    commands = [command for output in outputs for command in printed_commands(output)]
    assert len(commands) >= 8, outputs
    for command in commands:
        check_command(command)


def test_hints_name_the_program_as_it_runs_here():
    assert runnable('run `sandserve ls` or eval "$(sandserve env x)"') == (
        f'run `{program()} ls` or eval "$({program()} env x)"'
    )
    assert "sandserve's own" in runnable("sandserve's own probes")
    assert f"`{program()} ls`" in cli("status", "nosuch")


def test_code_run_with_python_c_is_told_plain_sandserve(monkeypatch):
    monkeypatch.setattr("sys.argv", ["-c"])
    assert program() == "sandserve"
    monkeypatch.setattr("sys.argv", ["/nowhere/bin/sandserve"])
    assert program() == "/nowhere/bin/sandserve"  # not on PATH: the path as typed


# --- choosing an endpoint -----------------------------------------------------------------------------------


USES_AN_ENDPOINT = ("chat", "tour", "batch", "classify", "status", "logs", "env", "down", "exec", "run")


def verbs_that_use_an_endpoint() -> list[click.Command]:
    ctx = click.Context(main)
    names = [name for name in VERB_MODULES if name in (*USES_AN_ENDPOINT, "top", "bench")]
    return [command for name in names if (command := main.get_command(ctx, name)) is not None]


@pytest.mark.parametrize("command", verbs_that_use_an_endpoint(), ids=lambda c: c.name)
def test_every_verb_that_uses_an_endpoint_takes_dash_e(command):
    options = {name for param in command.params for name in getattr(param, "opts", ())}
    assert {"-e", "--endpoint"} <= options


def test_an_id_given_both_ways_must_agree(fake_pipeline):
    first = lifecycle.up(fake_spec()).id
    assert f"id\t{first}" in cli("status", first, "-e", first)
    assert "Two endpoints given" in cli("status", first, "-e", "another")
    assert f"id\t{first}" in cli("status", "-e", first)


def test_several_up_lists_what_can_be_chosen_and_how(fake_pipeline):
    ids = [lifecycle.up(fake_spec()).id for _ in range(2)]
    lifecycle.up(fake_spec(served_name="worker", labels={FLEET_LABEL: ids[0]}))
    with pytest.raises(AmbiguousEndpointError) as caught:
        Registry().resolve(None)
    assert caught.value.message == f"Several endpoints are up: {', '.join(ids)}."  # not the worker
    assert f"`sandserve status -e {ids[0]}`" in str(caught.value)


def test_a_fleets_workers_are_not_a_choice(fake_pipeline):
    fleet = lifecycle.up(fake_spec(served_name="gateway"))
    lifecycle.up(fake_spec(served_name="worker", labels={FLEET_LABEL: fleet.id}))
    assert Registry().resolve(None).id == fleet.id


# --- up of a spec that is already up ------------------------------------------------------------------------


def test_the_same_spec_finds_the_endpoint_that_serves_it(fake_pipeline):
    endpoint = lifecycle.up(fake_spec(boot_timeout=5.0))
    twin = running_twin(fake_spec(boot_timeout=9.0))  # how long to wait is not what is served
    assert twin is not None and twin.id == endpoint.id
    assert running_twin(fake_spec(served_name="other")) is None
    assert running_twin(fake_spec(engine_settings=EngineSettings(extra_args=("--flag",)))) is None
    patient = fake_spec(provider_settings=ProviderSettings(create_timeout=1234.0))
    assert running_twin(patient) is not None
    fake_pipeline.servers[endpoint.id].stop()
    assert running_twin(fake_spec()) is None  # its server is gone: not one to hand back


def test_a_fleet_worker_is_never_handed_back(fake_pipeline):
    lifecycle.up(fake_spec(labels={FLEET_LABEL: "fleet-x"}))
    assert running_twin(fake_spec(labels={FLEET_LABEL: "fleet-x"})) is None


# --- wrong input, told what it is ---------------------------------------------------------------------------


def test_a_mistyped_verb_gets_did_you_mean():
    assert "Did you mean 'status'?" in cli("stauts")
    assert "Did you mean 'status'?" in cli("fleet", "stauts")
    assert "Did you mean" not in cli("xyzzy")


def test_a_file_that_is_not_a_model_is_refused_as_a_file(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# hello")
    with pytest.raises(ConfigError, match=r"README\.md is a file, but not a GGUF model file"):
        resolve_spec(str(readme), provider="local")
    renamed = tmp_path / "notes.gguf"
    renamed.write_text("# hello")
    with pytest.raises(ConfigError):
        resolve_spec(str(renamed), provider="local")


def test_a_gguf_file_without_the_suffix_is_still_a_model(tmp_path):
    model = tmp_path / "model.bin"
    model.write_bytes(b"GGUF" + bytes(64))
    assert resolve_spec(str(model), provider="local").engine == "llamacpp"


def test_a_missing_model_file_points_at_the_real_default():
    output = cli("up", "--provider", "local", "--model", "/nowhere/model.gguf", "--dry-run")
    assert "SmolLM2-135M" in output and "tiny" not in output


@pytest.mark.parametrize(
    ("log", "summary"),
    [
        ("error: invalid argument: --bogus-flag\n", "llama-server has no flag --bogus-flag"),
        (
            'error while handling argument "--ctx-size": stoi\n\nusage:\n-c, --ctx-size N\n',
            "llama-server refused the value given to --ctx-size (stoi)",
        ),
        (
            "sandserve adapter: SANDSERVE_BATCH_NICE must be a niceness from 0 to 19 (got 'high').\n",
            "SANDSERVE_BATCH_NICE is 'high', not a niceness from 0 to 19",
        ),
    ],
)
def test_an_engine_flag_llama_server_refuses_is_named_from_its_own_log(log, summary):
    diagnosis = diagnose(get_engine("llamacpp"), "build: 1 (abc)\n" + log)
    assert diagnosis is not None and diagnosis.summary == summary
