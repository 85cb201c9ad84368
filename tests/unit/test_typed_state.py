"""Typed state: sandbox handles per provider, the server's figures, one usage reader, one error-message
reader, exit codes decided by the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai.types import CompletionUsage

from sandserve.cli._app import exit_code_for
from sandserve.client.transport import error_for_status, server_message
from sandserve.client.usage import cache_stats, usage_of
from sandserve.endpoint import Endpoint
from sandserve.errors import (
    BootInterruptedError,
    ConfigError,
    EndpointUnavailableError,
    FleetBootError,
    LedgerBusyError,
    RequestRejectedError,
    SandserveError,
    ServerFailedError,
    UnknownPresetError,
)
from sandserve.providers.handles import (
    DaytonaHandle,
    GatewayHandle,
    LocalHandle,
    Member,
    SandboxHandle,
    ScalerHandle,
)
from sandserve.results import BootPhase, Capabilities, ServerInfo, TokenUsage


def test_a_handle_made_by_provider_name_is_that_providers_type() -> None:
    handle = SandboxHandle("daytona", "sb-1", port=8000, session="s")
    assert isinstance(handle, DaytonaHandle) and (handle.port, handle.session, handle.cmd_id) == (
        8000,
        "s",
        None,
    )
    assert isinstance(SandboxHandle("gateway", "f"), GatewayHandle)
    assert type(SandboxHandle("elsewhere", "x")) is SandboxHandle


def test_handles_have_no_untyped_view() -> None:
    handle = LocalHandle("local", "e", port=1)
    assert not hasattr(handle, "data")
    with pytest.raises(TypeError):
        LocalHandle("local", "e", {"port": 1})  # type: ignore[misc]


def test_handles_round_trip_through_their_json_and_the_old_form() -> None:
    member = Member(endpoint_id="w", worker_id="uuid-1", url="http://127.0.0.1:9")
    handle = GatewayHandle("gateway", "f", port=3, policy="cache_aware", members=[member])
    record = handle.to_record()
    assert record == {
        "provider": "gateway",
        "sandbox_id": "f",
        "port": 3,
        "policy": "cache_aware",
        "members": [{"endpoint_id": "w", "worker_id": "uuid-1", "url": "http://127.0.0.1:9"}],
    }
    back = SandboxHandle.from_record(record)
    assert back == handle and isinstance(back, GatewayHandle) and back.members[0] is not member
    old = {"provider": "local", "sandbox_id": "e", "data": {"port": 5, "log_path": "/l"}}
    assert SandboxHandle.from_record(old) == LocalHandle("local", "e", port=5, log_path="/l")
    old_gateway = {
        "provider": "gateway",
        "sandbox_id": "f",
        "data": {"port": 3, "members": [{**record["members"][0], "weight": 2}]},  # a key Member lacks
    }
    assert SandboxHandle.from_record(old_gateway) == GatewayHandle("gateway", "f", port=3, members=[member])


def test_each_providers_state_is_a_field_of_its_handle() -> None:
    daytona = SandboxHandle.from_record(
        {"provider": "daytona", "sandbox_id": "sb", "port": 8000, "session": "s", "cmd_id": "c-1"}
    )
    assert isinstance(daytona, DaytonaHandle) and daytona.cmd_id == "c-1" and daytona.extra == {}
    scaler = SandboxHandle.from_record(
        {
            "provider": "fleet-scaler",
            "sandbox_id": "scaler-1",
            "pid": 7,
            "settings": {"min_workers": 1},
            "state": {"updated": 2.0},
        }
    )
    assert isinstance(scaler, ScalerHandle) and isinstance(scaler, LocalHandle)
    assert (scaler.pid, scaler.settings, scaler.state) == (7, {"min_workers": 1}, {"updated": 2.0})
    assert ScalerHandle("fleet-scaler", "s").to_record() == {"provider": "fleet-scaler", "sandbox_id": "s"}


def test_keys_a_newer_version_wrote_are_kept_in_extra_and_written_back() -> None:
    record = {"provider": "local", "sandbox_id": "e", "port": 4, "gpu_ids": [0, 1], "extra": "odd"}
    handle = SandboxHandle.from_record(record)
    assert isinstance(handle, LocalHandle) and handle.port == 4
    assert handle.extra == {"gpu_ids": [0, 1], "extra": "odd"}
    assert handle.to_record() == record


def test_server_info_reads_and_writes_the_dict_it_replaced() -> None:
    info = ServerInfo(
        kv_pool_tokens=10,
        boot_timeline=(BootPhase("ready", 1.5),),
        capabilities=Capabilities(regex=True),
        extra={"policy": "p"},
    )
    data = info.to_dict()
    assert data["boot_timeline"] == [{"phase": "ready", "seconds": 1.5}] and data["policy"] == "p"
    assert ServerInfo.from_dict(data) == info
    assert info.get("kv_pool_tokens") == 10 and "policy" in info and info.get("preset") is None
    endpoint = Endpoint("e", "http://x", "m", info=data)
    assert endpoint.info == info and endpoint.to_dict()["info"] == data
    assert info.with_values(kv_pool_tokens=None, version="v").kv_pool_tokens == 10


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None}}, (10, 2, 0)),
        (
            {
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": 2,
                    "prompt_tokens_details": {"cached_tokens": 8},
                }
            },
            (10, 2, 8),
        ),
        ({"meta_info": {"prompt_tokens": 5, "completion_tokens": 3, "cached_tokens": 4}}, (5, 3, 4)),
        (
            [
                {"meta_info": {"prompt_tokens": 5, "completion_tokens": 1}},
                {"meta_info": {"prompt_tokens": 6}},
            ],
            (11, 1, 0),
        ),
        (CompletionUsage(prompt_tokens=7, completion_tokens=1, total_tokens=8), (7, 1, 0)),
        (
            {
                "usage": {
                    "prompt_tokens": -1,
                    "completion_tokens": "3",
                    "prompt_tokens_details": {"cached_tokens": True},
                }
            },
            (0, 0, 0),
        ),
        ({"choices": []}, (0, 0, 0)),
        (None, (0, 0, 0)),
    ],
)
def test_one_usage_reader_for_every_shape(answer: object, expected: tuple[int, int, int]) -> None:
    assert usage_of(answer) == TokenUsage(*expected)
    assert cache_stats(answer).cached_tokens == expected[2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"message": "bad schema", "type": "invalid_request_error"}}, "bad schema"),
        ({"object": "error", "message": "bad regex", "code": 400}, "bad regex"),
        ({"detail": "Not Found"}, "Not Found"),
        ('{"error": {"message": "from text"}}', "from text"),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        ({"weird": 1}, '{"weird": 1}'),
        ("", "HTTP 500 with an empty body"),
        (None, "HTTP 500 with an empty body"),
        ("x" * 2000, "x" * 500),
    ],
)
def test_one_error_message_reader(body: object, message: str) -> None:
    assert server_message(body, "HTTP 500 with an empty body") == message


def test_statuses_map_to_the_projects_errors() -> None:
    assert isinstance(error_for_status("u", 401, "no"), EndpointUnavailableError)
    assert isinstance(error_for_status("u", 422, "no"), RequestRejectedError)
    assert isinstance(error_for_status("u", 500, "no"), ServerFailedError)


def test_exit_codes_are_the_clis_not_the_errors() -> None:
    assert not any(hasattr(cls, "exit_code") for cls in (SandserveError, ConfigError, BootInterruptedError))
    assert exit_code_for(UnknownPresetError("x", ["tiny"])) == 2
    assert exit_code_for(BootInterruptedError(endpoint_id="e", log_path=None)) == 130
    assert exit_code_for(LedgerBusyError(Path("/l"), 60)) == 1
    assert exit_code_for(FleetBootError(fleet_id="f", cause=ConfigError("bad"))) == 2
    assert exit_code_for(FleetBootError(fleet_id="f", cause=SandserveError("boom"))) == 1


def test_a_new_provider_inherits_its_parents_handle_type() -> None:
    from sandserve.providers import handle_from_record
    from sandserve.providers.base import Provider
    from sandserve.providers.local import LocalProvider

    class Sidecar(LocalProvider):  # a process of its own beside a fleet, like its autoscaler
        name = "sidecar-for-test"

    try:
        handle = SandboxHandle("sidecar-for-test", "s", port=1, extra={"settings": {"min": 0}})
        assert (
            isinstance(handle, LocalHandle) and handle.port == 1 and handle.extra == {"settings": {"min": 0}}
        )
        assert handle_from_record(handle.to_record()) == handle
    finally:
        del Provider.registered["sidecar-for-test"], SandboxHandle.handle_types["sidecar-for-test"]
