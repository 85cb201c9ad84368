"""sandserve against the strict Daytona stand-in: what reaches the API, what is refused before it, and the
spend guardrails (time limit, idle stop, probes that do not count as activity, confirmation, breaker).

The stand-in refuses what the real service refuses (its DTO validators and service checks), so a body the
service would not take fails here too.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import run_cli, sglang_image_env, take_everything_down
from polling import poll_until
from standins.daytona_api import DaytonaStandin
from standins.hf_hub import HubStandin

from sandserve.errors import BootBreakerOpenError, EngineDiedError, ModelRepoError
from sandserve.providers.daytona import DaytonaProvider
from sandserve.providers.local import free_port
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Registry
from sandserve.serve.resolve import resolve_spec


@pytest.fixture
def daytona(monkeypatch: pytest.MonkeyPatch) -> Iterator[DaytonaStandin]:
    standin = DaytonaStandin(
        extra_env={
            **sglang_image_env(),
            "SANDSERVE_FAKE_SGLANG_LOG_STEP": "0",
            "SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS": "0.2",
        },
        path_prepend=[Path(sys.executable).parent],
        vault={"hf-secret": "hf_accepted"},
    )
    with standin:
        monkeypatch.setenv("DAYTONA_API_KEY", standin.api_key)
        monkeypatch.setenv("DAYTONA_API_URL", standin.url)
        monkeypatch.setattr(DaytonaProvider, "poll_interval", 0.1)
        yield standin
        take_everything_down()


def sglang_spec(**overrides: object):
    overrides.setdefault("port", free_port())
    return resolve_spec(provider="daytona", **overrides)


def last_create(daytona: DaytonaStandin) -> dict:
    assert daytona.create_bodies, "nothing was created"
    return daytona.create_bodies[-1]


# --- the stand-in itself refuses what the service refuses ------------------------------------------------


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (
            {"gpuType": ["unknown_default_open_api"]},
            "each value in gpuType must be one of the following values",
        ),
        ({"gpuType": ["RTX_PRO_6000"]}, "each value in gpuType must be one of the following values"),
        ({"gpu": 9}, "gpu must not be greater than 8"),
        ({"autoDeleteInterval": -1}, "GPU sandboxes must be ephemeral - set autoDeleteInterval to 0"),
        ({"gpuTypes": ["H100"]}, "property gpuTypes should not exist"),
        ({"ttlMinutes": -5}, "ttlMinutes must be a non-negative integer"),
    ],
)
def test_the_stand_in_refuses_bodies_the_service_refuses(daytona, change, sentence):
    body = {"gpu": 1, "gpuType": ["H100"], "autoDeleteInterval": 0, "snapshot": "x", **change}
    response = httpx.post(
        f"{daytona.url}/sandbox", json=body, headers={"Authorization": f"Bearer {daytona.api_key}"}
    )
    assert response.status_code == 400
    envelope = response.json()
    message = envelope["message"]
    assert sentence in (message if isinstance(message, str) else " ".join(message))
    assert envelope["statusCode"] == 400 and envelope["error"] == "Bad Request"
    assert daytona.sandboxes == {}


def test_sandboxes_see_only_their_own_environment(daytona, monkeypatch):
    from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig

    monkeypatch.setenv("SANDSERVE_HOST_MARKER", "leaked")
    client = Daytona(DaytonaConfig(api_key=daytona.api_key, api_url=daytona.url))
    sandbox = client.create(CreateSandboxFromSnapshotParams(env_vars={"MINE": "yes"}))
    seen = sandbox.process.exec("echo marker=$SANDSERVE_HOST_MARKER mine=$MINE").result
    assert "marker= mine=yes" in seen


def test_a_new_sandbox_goes_through_the_services_states_and_the_sdk_hears_them(daytona):
    daytona.state_step_seconds = 0.3
    endpoint = lifecycle.up(sglang_spec())
    assert daytona.sandboxes[endpoint.sandbox_id].state.value == "started"
    states = [state for _event, sandbox_id, state in daytona.events.sent if sandbox_id == endpoint.sandbox_id]
    assert states == ["pending_build", "building_snapshot", "starting", "started"]
    assert daytona.events.connections >= 1  # the SDK waited on the event stream, not on a 404 and polling


def test_the_event_stream_refuses_a_wrong_key(daytona):
    import socketio

    client = socketio.Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(
            daytona.url.removesuffix("/api"),
            socketio_path="/api/socket.io/",
            auth={"token": "not-the-key"},
            transports=["websocket"],
            wait_timeout=5,
        )
    assert daytona.events.refused == 1


# --- GPU names, region, configuration ----------------------------------------------------------------------


def test_the_default_gpu_preference_list_arrives_as_the_api_spells_it(daytona):
    lifecycle.up(sglang_spec())
    body = last_create(daytona)
    assert body["gpuType"] == ["H100", "RTX-PRO-6000"] and body["gpu"] == 1


def test_gpu_names_are_sent_as_the_apis_values(daytona):
    lifecycle.up(sglang_spec(gpus=("rtx_pro_6000", "h100")))
    assert last_create(daytona)["gpuType"] == ["RTX-PRO-6000", "H100"]


def test_an_unknown_gpu_is_refused_before_anything_is_created(daytona):
    for extra in ([], ["--dry-run"]):
        result = run_cli("up", "--provider", "daytona", "--gpu", "NOPE", "--yes", *extra)
        assert result.returncode == 2, result.stderr
        assert "Unknown GPU type 'NOPE'" in result.stderr and "RTX-PRO-6000" in result.stderr
    assert daytona.create_bodies == [] and Registry().list(include_down=True) == []


def test_daytona_target_from_the_environment_reaches_the_create(daytona, monkeypatch):
    monkeypatch.setenv("DAYTONA_TARGET", "eu")
    lifecycle.up(sglang_spec())
    assert last_create(daytona)["target"] == "eu"


def test_the_dry_run_says_where_each_setting_came_from(monkeypatch):
    Path(".env").write_text("DAYTONA_TARGET=eu\nHF_TOKEN=hf_in_a_file\n")
    result = run_cli("up", "--provider", "daytona", "--dry-run", "--json")
    plan = json.loads(result.stdout)
    assert plan["target"] == "eu" and plan["settings_from"]["DAYTONA_TARGET"] == ".env"
    assert plan["settings_from"]["HF_TOKEN"] == ".env" and "hf_in_a_file" not in result.stdout
    assert plan["ttl_minutes"] == 240 and plan["auto_stop"] == "off"


class _Trap:
    """An HTTP server that records whoever calls it (a DAYTONA_API_URL planted in a .env file)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        trap = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                trap.calls.append(self.headers.get("Authorization", ""))
                self.send_response(500)
                self.end_headers()

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_dotenv_api_url_never_receives_the_key(daytona, monkeypatch):
    trap = _Trap()
    try:
        # The real endpoint comes from the process environment (the SDK's older name for it); the .env file
        # in the working directory tries to send the key elsewhere.
        monkeypatch.delenv("DAYTONA_API_URL")
        monkeypatch.setenv("DAYTONA_SERVER_URL", daytona.url)
        Path(".env").write_text(f"DAYTONA_API_URL={trap.url}\n")
        result = run_cli("up", "--provider", "daytona", "--yes", "--quiet", "--port", str(free_port()))
        assert result.returncode == 0, result.stderr
        assert trap.calls == [] and daytona.create_bodies
    finally:
        trap.close()


def test_a_parent_folders_env_does_not_make_the_demo_a_gpu_run(tmp_path):
    Path(".env").write_text("DAYTONA_API_KEY=dtn_parent_key\n")
    child = Path("child")
    child.mkdir()
    result = run_cli("up", "--dry-run", "--json", cwd=child)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["provider"] == "local"


# --- Hugging Face preflight --------------------------------------------------------------------------------


def test_a_gated_repo_is_refused_before_a_gpu_is_created(daytona, monkeypatch):
    with HubStandin(gated={"openai/gpt-oss-20b": {"hf_accepted"}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(ModelRepoError, match="gated repo"):
            lifecycle.up(sglang_spec())
        assert daytona.create_bodies == [] and Registry().list(include_down=True) == []

        monkeypatch.setenv("HF_TOKEN", "hf_accepted")
        endpoint = lifecycle.up(sglang_spec())
        assert hub.requests[-1] == ("/api/models/openai/gpt-oss-20b/auth-check", "Bearer hf_accepted")
        assert daytona.sandboxes[endpoint.sandbox_id].env["HF_TOKEN"] == "hf_accepted"


class _Warnings(lifecycle.BootEvents):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def warning(self, message: str) -> None:
        self.seen.append(message)


def test_with_the_token_in_a_daytona_secret_a_gated_repo_is_only_a_warning(daytona, monkeypatch):
    with HubStandin(gated={"openai/gpt-oss-20b": {"hf_accepted"}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        events = _Warnings()
        endpoint = lifecycle.up(sglang_spec(hf_token_secret="hf-secret"), events=events)
    assert "gated repo" in events.seen[0] and "'hf-secret'" in events.seen[0]
    assert last_create(daytona)["secrets"] == [{"HF_TOKEN": "hf-secret"}]
    server = daytona.sandboxes[endpoint.sandbox_id]
    assert "HF_TOKEN" not in server.env  # the value reaches the sandbox's processes from the vault only
    seen = run_cli("exec", "--", "sh", "-c", "echo token=$HF_TOKEN")
    assert seen.returncode == 0 and "token=hf_accepted" in seen.stdout


def test_a_missing_repo_is_refused_at_once(daytona, monkeypatch):
    with HubStandin(public={"openai/gpt-oss-20b"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        result = run_cli("up", "--provider", "daytona", "--model", "nobody/no-such-model", "--yes")
    assert result.returncode == 2 and "does not exist on Hugging Face" in result.stderr
    assert daytona.create_bodies == []


def test_offline_the_check_is_a_warning_and_the_saved_login_is_forwarded(daytona, tmp_path):
    hf_home = Path(os.environ["HF_HOME"])
    hf_home.mkdir(parents=True, exist_ok=True)
    (hf_home / "token").write_text("hf_saved_by_login")  # what `hf auth login` writes
    result = run_cli("up", "--provider", "daytona", "--yes", "--quiet", "--port", str(free_port()))
    assert result.returncode == 0, result.stderr
    assert "could not check openai/gpt-oss-20b on Hugging Face" in result.stderr
    (sandbox,) = daytona.sandboxes.values()
    assert sandbox.env["HF_TOKEN"] == "hf_saved_by_login"


# --- spend guardrails ---------------------------------------------------------------------------------------


def test_ttl_auto_stop_and_spot_reach_the_api(daytona):
    endpoint = lifecycle.up(sglang_spec(ttl_minutes=30, auto_stop_minutes=20, spot=True))
    body = last_create(daytona)
    assert (body["ttlMinutes"], body["autoStopInterval"], body["spot"]) == (30, 20, True)
    sandbox = daytona.sandboxes[endpoint.sandbox_id]
    assert sandbox.ttl_minutes == 30 and sandbox.auto_stop_interval == 20 and sandbox.spot


def test_a_gpu_sandbox_gets_the_default_time_limit_and_the_cli_can_lift_it(daytona):
    lifecycle.up(sglang_spec())
    assert last_create(daytona)["ttlMinutes"] == 240
    result = run_cli("up", "--provider", "daytona", "--ttl", "0", "--yes", "--port", str(free_port()))
    assert result.returncode == 0, result.stderr
    assert last_create(daytona)["ttlMinutes"] == 0 and "no time limit" in result.stderr


def test_sandserves_own_probes_do_not_count_as_activity(daytona, closing):
    endpoint = lifecycle.up(sglang_spec(auto_stop_minutes=15))
    sandbox = daytona.sandboxes[endpoint.sandbox_id]
    assert sandbox.activity_updates == 0  # every readiness probe and the info request carried the header
    closing(endpoint.openai()).models.list()
    assert sandbox.activity_updates == 1  # a user's request does count


def test_a_paid_gpu_is_refused_without_a_terminal_and_without_yes(daytona):
    result = run_cli("up", "--provider", "daytona", "--port", str(free_port()))
    assert result.returncode == 2
    assert "no terminal to confirm it on" in result.stderr and "--yes" in result.stderr
    assert daytona.create_bodies == []


def test_down_all_is_refused_without_a_terminal_and_without_yes(daytona):
    endpoint = lifecycle.up(sglang_spec())
    result = run_cli("down", "--all")
    assert result.returncode == 2 and "--yes" in result.stderr
    assert endpoint.sandbox_id in daytona.sandboxes
    assert run_cli("down", "--all", "--yes").returncode == 0
    assert endpoint.sandbox_id in daytona.deleted_ids


def test_the_breaker_trips_after_three_failed_boots_until_forced(daytona):
    failing = {"env": {"SANDSERVE_FAKE_SGLANG_FAIL": "kv_oom"}, "delete_on_failure": True}
    for _ in range(3):
        with pytest.raises(EngineDiedError):
            lifecycle.up(sglang_spec(**failing))
    creates = len(daytona.create_bodies)
    with pytest.raises(BootBreakerOpenError) as caught:
        lifecycle.up(sglang_spec(**failing))
    assert "failed to boot 3 times in a row" in str(caught.value) and "--force" in str(caught.value)
    assert "KV cache pool" in str(caught.value) or "memory" in str(caught.value)
    assert len(daytona.create_bodies) == creates  # refused before any create

    result = run_cli(
        "up",
        "--provider",
        "daytona",
        "--yes",
        "--env",
        "SANDSERVE_FAKE_SGLANG_FAIL=kv_oom",
        "--delete-on-failure",
    )
    assert result.returncode == 2 and "--force" in result.stderr
    with pytest.raises(EngineDiedError):
        lifecycle.up(sglang_spec(**failing), force=True)
    assert len(daytona.create_bodies) == creates + 1
    lifecycle.up(sglang_spec())  # another spec is not affected


def test_ls_shows_age_and_cost_so_far_when_a_price_is_set(daytona):
    endpoint = lifecycle.up(sglang_spec())
    listed = json.loads(run_cli("ls", "--json", env={"SANDSERVE_GPU_HOUR_PRICE": "3.60"}).stdout)
    (entry,) = [e for e in listed if e["id"] == endpoint.id]
    assert entry["age_seconds"] >= 0 and entry["cost_so_far"] > 0
    header, row = run_cli(
        "ls", env={"SANDSERVE_GPU_HOUR_PRICE": "3.60"}
    ).stdout.splitlines()  # a pipe: tab-separated, under a header line
    assert header.split("\t")[-1] == "cost"
    assert row.split("\t")[0] == endpoint.id and row.split("\t")[-1].startswith("$0.0")
    assert json.loads(run_cli("ls", "--json").stdout)[0]["cost_so_far"] is None


def test_the_services_validation_sentences_reach_the_user(daytona, monkeypatch):
    """The API answers a body its validators refuse with a list of sentences the SDK reduces to "Bad Request";
    sandserve reads them back (here: a body forced to ask for nine GPUs, as no spec of sandserve's can)."""
    from sandserve.errors import ProviderError
    from sandserve.providers import daytona_params

    real = daytona_params.create_params

    def nine_gpus(*args, **kwargs):
        params = real(*args, **kwargs)
        params.resources.gpu = 9
        return params

    monkeypatch.setattr(daytona_params, "create_params", nine_gpus)
    with pytest.raises(ProviderError, match="gpu must not be greater than 8"):
        lifecycle.up(sglang_spec())
    assert daytona.sandboxes == {}


def test_the_service_ends_an_idle_sandbox_that_ls_watches_and_spares_a_used_one(daytona):
    """Auto-stop, as the service applies it (a "minute" here is a second): sandserve's own checks (`ls`,
    `status`) do not count as activity, so an idle endpoint is stopped (and, ephemeral, deleted); one whose
    users keep sending requests is not."""
    import time

    daytona.minute_seconds = 1.0
    idle = lifecycle.up(sglang_spec(auto_stop_minutes=2))
    used = lifecycle.up(sglang_spec(auto_stop_minutes=2))
    in_use = threading.Event()
    in_use.set()

    def a_user() -> None:
        with used.openai() as client:
            while in_use.is_set():
                client.models.list()
                time.sleep(0.2)

    user = threading.Thread(target=a_user, daemon=True)
    user.start()
    try:
        registry = Registry()

        def watched() -> float:
            for record in registry.list():
                lifecycle.refresh(record)  # what `sandserve ls` does, every 0.2 s
            return time.monotonic()

        poll_until(
            lambda: watched() and (idle.sandbox_id, "auto-stop") in daytona.ended_by_service,
            what="the idle sandbox stopped by the service",
            interval=0.2,
        )
        # Watched for one more auto-stop period: the used one outlives it (longer on a slower machine).
        spared_until = watched() + 2 * daytona.minute_seconds
        poll_until(lambda: watched() > spared_until, what="one more auto-stop period", interval=0.2)
        assert used.sandbox_id in daytona.sandboxes
        listed = {entry["id"]: entry["state"] for entry in json.loads(run_cli("ls", "--json").stdout)}
        assert listed == {idle.id: "dead", used.id: "ready"}
    finally:
        in_use.clear()
        user.join(timeout=10)


def test_the_service_ends_a_sandbox_at_its_ttl_whatever_it_does(daytona, closing):
    import contextlib

    import openai

    daytona.minute_seconds = 1.0
    endpoint = lifecycle.up(sglang_spec(ttl_minutes=3))
    client = closing(endpoint.openai(max_retries=0))

    def ended_while_in_use() -> bool:
        with contextlib.suppress(openai.APIError):
            client.models.list()  # in use all along: a TTL does not care
        return (endpoint.sandbox_id, "ttl") in daytona.ended_by_service

    poll_until(ended_while_in_use, what="the sandbox ended by its TTL", interval=0.1)
    assert endpoint.sandbox_id not in daytona.sandboxes
