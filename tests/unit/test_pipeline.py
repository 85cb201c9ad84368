"""The pipeline (`serve.lifecycle`) with the in-process fake provider and engine: boot phases, readiness only
after a real generation, death noticed with its log saved and its cause named, timeout, interrupt, the
ledger's rows at each step, and `down`. No process is started."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from fakes import FAKE, TOKEN_HEADER, FakeProvider, Script, fake_spec, healthy_boot

from sandserve.cli._app import exit_code_for
from sandserve.errors import BootInterruptedError, BootTimeoutError, EngineDiedError
from sandserve.providers.handles import LocalHandle
from sandserve.serve import lifecycle
from sandserve.serve.boot_events import BootEvents
from sandserve.serve.ledger import Registry, State


class RecordedEvents(BootEvents):
    """Every callback the pipeline makes, in order; the ledger's rows as each step starts."""

    def __init__(self, *, interrupt_on: str | None = None) -> None:
        self.statuses: list[str] = []
        self.logs: list[str] = []
        self.phases: list[str] = []
        self.states_seen: list[str] = []
        self.interrupt_on = interrupt_on

    def status(self, message: str) -> None:
        self.statuses.append(message)
        self.states_seen += [str(record.state) for record in Registry().list()]

    def log(self, text: str) -> None:
        self.logs.append(text)
        if self.interrupt_on and self.interrupt_on in text:
            raise KeyboardInterrupt

    def phase(self, name: str, seconds: float) -> None:
        self.phases.append(name)


def only_server(fake: type[FakeProvider]):
    (server,) = fake.servers.values()
    return server


def test_ready_only_after_a_real_generation_with_every_phase_in_order(fake_pipeline):
    fake_pipeline.script = healthy_boot(kv_tokens=8192, ready_at=0.05)
    fake_pipeline.script.refuses_first = 3  # the port answers, the model is not ready yet
    events = RecordedEvents()
    endpoint = lifecycle.up(fake_spec(), events=events)

    server = only_server(fake_pipeline)
    assert server.refused_early >= 3 and server.generations == 1, "asked until a generation succeeded"
    assert events.phases == ["sandbox ready", "weights loaded", "kv cache allocated", "listening", "ready"]
    assert "".join(events.logs) == server.log_text()
    assert endpoint.info["kv_pool_tokens"] == 8192
    assert endpoint.info["max_total_num_tokens"] == 4096 and endpoint.info["slots"] == 2
    assert [step["phase"] for step in endpoint.info["boot_timeline"]] == events.phases
    assert endpoint.engine == FAKE and endpoint.provider == FAKE and endpoint.model == "fake-model"
    assert endpoint.url == f"http://127.0.0.1:{server.port}"


def test_the_launch_command_and_every_probe_carry_what_the_provider_says(fake_pipeline):
    events = RecordedEvents()
    endpoint = lifecycle.up(fake_spec(), events=events)
    server = only_server(fake_pipeline)
    assert server.launch is not None
    assert server.launch.argv[-4:] == ["--host", "0.0.0.0", "--port", str(server.port)]
    assert any(status.startswith("starting the server: fake-server --model") for status in events.statuses)
    assert server.unauthorised == 0 and endpoint.headers == {TOKEN_HEADER: server.token}


def test_an_api_key_is_masked_in_what_is_shown(fake_pipeline):
    events = RecordedEvents()
    lifecycle.up(fake_spec(api_key="sk-very-secret"), events=events)
    assert only_server(fake_pipeline).launch.argv[-1] == "sk-very-secret"  # type: ignore[union-attr]
    shown = "\n".join(events.statuses)
    assert "sk-very-secret" not in shown and "--api-key ****" in shown


def test_the_ledger_records_each_step(fake_pipeline):
    events = RecordedEvents()
    endpoint = lifecycle.up(fake_spec(), events=events)
    assert set(events.states_seen) == {"booting"}, "the row is written before anything is created"
    record = Registry().get(endpoint.id)
    assert record.state is State.READY and record.endpoint == endpoint
    assert (
        record.sandbox.sandbox_id == endpoint.id
        and isinstance(record.sandbox, LocalHandle)
        and record.sandbox.port == only_server(fake_pipeline).port
    )
    assert record.spec["engine"] == FAKE and record.spec["api_key"] is None


def test_death_is_noticed_with_the_log_saved_and_the_cause_named(fake_pipeline):
    fake_pipeline.script = Script(
        log=[(0.0, "fake: starting\n"), (0.02, "fake: weights loaded\n"), (0.05, "fake: out of memory\n")],
        generates_after=None,
        dies_at=0.08,
        exit_code=3,
    )
    with pytest.raises(EngineDiedError) as raised:
        lifecycle.up(fake_spec(boot_timeout=600.0), events=RecordedEvents())

    died = raised.value
    assert died.exit_code_seen == 3 and died.diagnosis == "the fake GPU ran out of memory"
    assert died.hint == "Use a bigger fake GPU."
    log_path = Path(died.log_path)  # type: ignore[arg-type]
    assert log_path.read_text() == "fake: starting\nfake: weights loaded\nfake: out of memory\n"
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    (record,) = Registry().list(include_down=True)
    assert record.state is State.DOWN and record.error == died.message
    assert record.log_path == str(log_path)
    assert fake_pipeline.deleted == [record.id]


def test_a_provider_that_keeps_failed_sandboxes_keeps_them_unless_told(fake_pipeline, monkeypatch):
    monkeypatch.setattr(FakeProvider, "keeps_failed_sandboxes", True)
    fake_pipeline.script = Script(log=[(0.0, "fake: out of memory\n")], generates_after=None, dies_at=0.02)
    with pytest.raises(EngineDiedError):
        lifecycle.up(fake_spec(), events=RecordedEvents())
    (record,) = Registry().list()
    assert record.state is State.FAILED and fake_pipeline.deleted == []

    with pytest.raises(EngineDiedError):
        lifecycle.up(fake_spec(delete_on_failure=True), events=RecordedEvents())
    second = next(r for r in Registry().list(include_down=True) if r.id != record.id)
    assert second.state is State.DOWN and fake_pipeline.deleted == [second.id]


def test_a_fatal_line_from_a_server_that_lingers_is_a_death_after_the_grace(fake_pipeline, monkeypatch):
    monkeypatch.setattr(lifecycle, "FATAL_LOG_GRACE_SECONDS", 0.05)
    fake_pipeline.script = Script(log=[(0.0, "fake: gated\n")], generates_after=None)
    with pytest.raises(EngineDiedError) as raised:
        lifecycle.up(fake_spec(boot_timeout=600.0), events=RecordedEvents())
    assert raised.value.exit_code_seen is None and raised.value.diagnosis == "the model is gated"
    assert "died during boot" in raised.value.message


def test_a_server_that_never_generates_times_out_and_is_cleaned_up(fake_pipeline):
    fake_pipeline.script = Script(log=[(0.0, "fake: listening\n")], generates_after=None)
    with pytest.raises(BootTimeoutError) as raised:
        lifecycle.up(fake_spec(boot_timeout=0.05), events=RecordedEvents())
    server = only_server(fake_pipeline)
    assert server.refused_early > 0 and server.generations == 0 and server.stopped
    assert Path(raised.value.log_path).read_text() == "fake: listening\n"  # type: ignore[arg-type]
    (record,) = Registry().list(include_down=True)
    assert record.state is State.DOWN and "not ready after 0 s" in (record.error or "")


def test_an_interrupt_while_booting_stops_the_server_and_records_it(fake_pipeline):
    fake_pipeline.script = healthy_boot(ready_at=60.0)
    with pytest.raises(BootInterruptedError) as raised:
        lifecycle.up(fake_spec(), events=RecordedEvents(interrupt_on="weights loaded"))
    assert exit_code_for(raised.value) == 130  # the CLI maps it (cli/_app.py)
    server = only_server(fake_pipeline)
    assert server.stopped and not server.alive()
    (record,) = Registry().list(include_down=True)
    assert record.state is State.DOWN and record.error == "interrupted while booting"
    assert "fake: weights loaded" in Path(record.log_path or "").read_text()


def test_down_stops_the_server_and_marks_the_row(fake_pipeline):
    endpoint = lifecycle.up(fake_spec(), events=RecordedEvents())
    registry = Registry()
    record = lifecycle.refresh(registry.get(endpoint.id))
    assert record.live is True and record.shown_state == "ready"

    lifecycle.down(record, registry)
    assert only_server(fake_pipeline).stopped
    after = lifecycle.refresh(registry.get(endpoint.id))
    assert after.state is State.DOWN and after.live is False
    assert registry.list() == []


def test_a_server_gone_after_boot_shows_as_dead(fake_pipeline):
    endpoint = lifecycle.up(fake_spec(), events=RecordedEvents())
    only_server(fake_pipeline).stop()
    record = lifecycle.refresh(Registry().get(endpoint.id))
    assert record.live is False and record.shown_state == "dead"
