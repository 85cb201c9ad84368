"""The Endpoint: everything a client needs to talk to a served model, whatever served it, and the one handle
on the thing served: ``endpoint.status()``, ``.logs()``, ``.down()`` (as huggingface_hub's InferenceEndpoint).

An Endpoint is plain data (it round-trips through the ledger and through ENDPOINT/TOKEN in the environment);
the client constructors below make the OpenAI SDK, LiteLLM and raw HTTP work unchanged in every auth mode.
What needs the layers above (the client, the engines, the ledger) goes through ``EndpointServices``, which
``sandserve`` installs when it is imported.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from sandserve import endpoint_slot
from sandserve.defaults import DEFAULT_ENGINE
from sandserve.server_info import ServerInfo

if TYPE_CHECKING:
    # Aliased: the method ``Endpoint.openai`` would shadow the module inside the class body.
    import anthropic as anthropic_sdk
    import openai as openai_sdk

    from sandserve.results import CacheStats, Capabilities, GenerateResult


class EndpointServices(Protocol):
    """What an Endpoint asks of the layers above it (the client, the engines). ``sandserve`` installs the
    implementation when it is imported, so this module depends on nothing above the vocabulary."""

    def generate(self, endpoint: Endpoint, text: str, options: dict[str, Any]) -> GenerateResult: ...

    def cache_stats(self, response: Any) -> CacheStats: ...

    def capabilities(self, endpoint: Endpoint) -> Capabilities: ...

    def status(self, endpoint: Endpoint) -> EndpointStatus: ...

    def logs(self, endpoint: Endpoint) -> str: ...

    def down(self, endpoint: Endpoint) -> None: ...

    def colocated(self, endpoint: Endpoint, verb: str, options: dict[str, Any]) -> Any: ...

    def environment_headers(self) -> tuple[str, dict[str, str]]:
        """For an endpoint named by ENDPOINT/TOKEN: the header TOKEN goes in, and what a probe adds."""
        ...


@dataclass(frozen=True)
class EndpointStatus:
    """Where a served thing stands, from the ledger and its provider."""

    id: str
    state: str
    """``booting``, ``ready``, ``failed``, ``down``, or ``dead`` (recorded ready, but its server is gone)."""
    live: bool | None
    """Whether the provider still runs its server (None: could not be asked)."""
    error: str | None = None
    log_path: str | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self.live is not False


def install_services(services: EndpointServices) -> None:
    endpoint_slot.services = services


def _installed() -> EndpointServices:
    services = endpoint_slot.services
    if services is None:  # pragma: no cover - importing any sandserve module imports the package first
        raise RuntimeError("sandserve's endpoint services are not installed: import sandserve first.")
    return cast(EndpointServices, services)


@dataclass(init=False)
class Endpoint:
    id: str
    url: str
    """Base URL of the server, without ``/v1`` and without a trailing slash."""
    model: str
    """The served model name clients pass as ``model``."""
    engine: str
    provider: str
    auth: str
    headers: dict[str, str]
    """Headers every request must carry (the token, in token mode)."""
    token_header: str | None
    """Which of ``headers`` carries the token (TOKEN), as the provider names it; None: there is none."""
    probe_headers: dict[str, str]
    """What sandserve's own probes (load readings, status) add, as the provider says: watching an endpoint
    must not count as its activity."""
    api_key: str | None
    """Sent as ``Authorization: Bearer`` (SGLang ``--api-key``, in key mode)."""
    sandbox_id: str | None
    expires_at: float | None
    """Unix time after which the URL stops working (signed URLs)."""
    info: ServerInfo
    """What boot learnt: KV pool size, boot timeline, capabilities."""

    def __init__(
        self,
        id: str,
        url: str,
        model: str,
        engine: str = DEFAULT_ENGINE,
        provider: str = "env",
        auth: str = "token",
        headers: dict[str, str] | None = None,
        api_key: str | None = None,
        sandbox_id: str | None = None,
        expires_at: float | None = None,
        info: ServerInfo | Mapping[str, Any] | None = None,
        token_header: str | None = None,
        probe_headers: dict[str, str] | None = None,
    ) -> None:
        # ``info`` may come as the dict it used to be (the ledger's JSON, older callers).
        self.id, self.url, self.model, self.engine = id, url, model, engine
        self.provider, self.auth, self.headers, self.api_key = provider, auth, dict(headers or {}), api_key
        self.sandbox_id, self.expires_at = sandbox_id, expires_at
        self.token_header, self.probe_headers = token_header, dict(probe_headers or {})
        self.info = info if isinstance(info, ServerInfo) else ServerInfo.from_dict(dict(info or {}))
        #: The ledger this handle came from, for ``status``, ``logs``, ``down`` (None: the user's own). Not
        #: part of the data: set by the ledger that returned it, or by ``up`` with the one it recorded in.
        self.ledger: object | None = None

    @property
    def serves_random_model(self) -> bool:
        """Whether this is the locally written tiny model: its text is gibberish by construction."""
        from sandserve.presets import find_preset

        tiny = find_preset("tiny")
        return self.info.preset == "tiny" or (tiny is not None and self.model == tiny.served_name)

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``.../v1``)."""
        return f"{self.url}/v1"

    @property
    def token(self) -> str:
        """The token clients send ("" where nothing checks one)."""
        return self.headers.get(self.token_header, "") if self.token_header else ""

    def request_headers(self) -> dict[str, str]:
        """Every header a raw HTTP request needs (auth included)."""
        headers = dict(self.headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def probe_request_headers(self) -> dict[str, str]:
        """The headers of sandserve's own probes: a request's, and the provider's probe headers."""
        return {**self.request_headers(), **self.probe_headers}

    def openai(self, **kwargs: Any) -> openai_sdk.OpenAI:
        import openai

        return openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key or "EMPTY",
            default_headers=self.headers or None,
            **kwargs,
        )

    def async_openai(self, **kwargs: Any) -> openai_sdk.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key or "EMPTY",
            default_headers=self.headers or None,
            **kwargs,
        )

    def anthropic(self, **kwargs: Any) -> anthropic_sdk.Anthropic:
        """An ``anthropic.Anthropic`` on this endpoint's Anthropic Messages API (``pip install
        'sandserve[anthropic]'``). A key goes as ``Authorization: Bearer`` (SGLang's ``--api-key`` reads no
        ``x-api-key``); the preview token as its header."""
        import anthropic

        return anthropic.Anthropic(**self._anthropic_kwargs(), **kwargs)

    def async_anthropic(self, **kwargs: Any) -> anthropic_sdk.AsyncAnthropic:
        import anthropic

        return anthropic.AsyncAnthropic(**self._anthropic_kwargs(), **kwargs)

    def _anthropic_kwargs(self) -> dict[str, Any]:
        auth = {"auth_token": self.api_key} if self.api_key else {"api_key": "EMPTY"}
        return {"base_url": self.url, "default_headers": self.headers or None, **auth}

    def litellm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``litellm.completion`` / ``acompletion`` (add ``messages``)."""
        kwargs: dict[str, Any] = {
            "model": f"openai/{self.model}",
            "api_base": self.base_url,
            "api_key": self.api_key or "EMPTY",
        }
        if self.headers:
            kwargs["extra_headers"] = dict(self.headers)
        return kwargs

    def generate(
        self,
        text: str,
        *,
        regex: str | None = None,
        ebnf: str | None = None,
        json_schema: dict[str, Any] | str | None = None,
        max_new_tokens: int = 128,
        temperature: float | None = None,
        stop: str | list[str] | None = None,
        timeout: float = 120.0,
    ) -> GenerateResult:
        """Continue ``text`` (no chat template) under at most one constraint: SGLang's native ``/generate``.

        On llama.cpp (no ``/generate``) the same call goes to its completions route, with the regex compiled
        to a GBNF grammar and EBNF passed as GBNF; what it cannot enforce raises ``CapabilityError``, never an
        unconstrained answer (see ``sandserve.client.constrained``)."""
        options = {
            "regex": regex,
            "ebnf": ebnf,
            "json_schema": json_schema,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "stop": stop,
            "timeout": timeout,
        }
        return _installed().generate(self, text, options)

    @staticmethod
    def cache_stats(response: Any) -> CacheStats:
        """Cached and prompt tokens of any response (SDK object, LiteLLM response, dict, ``/generate``);
        a null ``prompt_tokens_details`` counts as 0 cached."""
        return _installed().cache_stats(response)

    def capabilities(self) -> Capabilities:
        """What this endpoint's engine can do (recorded at boot; else the engine's table)."""
        if self.info.capabilities is not None:
            return self.info.capabilities
        return _installed().capabilities(self)

    # --- the served thing: the ledger's record of it and its provider -------------------------------------

    def status(self) -> EndpointStatus:
        """Where it stands now: the ledger's state, checked against its provider (is the server running?)."""
        return _installed().status(self)

    def logs(self) -> str:
        """The server's whole log so far."""
        return _installed().logs(self)

    def down(self) -> None:
        """Stop the server and delete its sandbox (a fleet's workers too); the ledger keeps the row, down."""
        _installed().down(self)

    def exec(self, argv: list[str], **options: Any) -> Any:
        """Run a command beside the server: inside its Daytona sandbox (ENDPOINT=http://localhost:8000), or on
        this machine for a local endpoint. Output streams to ``on_output``; files written under ``out/`` come
        back into ``output_dir``. Returns a ``ColocatedResult`` (exit code, files)."""
        return _installed().colocated(self, "exec", {"argv": list(argv), **options})

    def run(self, script: str | os.PathLike[str], **options: Any) -> Any:
        """Run a Python script beside the server (see ``exec``); ``upload=[paths]`` go up with it."""
        return _installed().colocated(self, "run", {"script": script, **options})

    def export_lines(self) -> list[str]:
        """The shell lines that hand this endpoint to curl, the examples and the guide's clients. TOKEN is
        always set, empty when nothing checks it: the guide's clients read it unconditionally."""
        values = {
            "ENDPOINT": self.url,
            "MODEL": self.model,
            "TOKEN": self.token,
        }
        if self.api_key:
            values["OPENAI_API_KEY"] = self.api_key
        # Quoted for the shell: `eval "$(sandserve up)"` must survive a model named "My Model (q4)".
        return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {
            **data,
            "headers": dict(self.headers),
            "probe_headers": dict(self.probe_headers),
            "info": self.info.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Endpoint:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Endpoint | None:
        """The endpoint described by ENDPOINT (+ TOKEN, OPENAI_API_KEY, MODEL), or None if ENDPOINT is
        unset."""
        env = os.environ if environ is None else environ
        url = env.get("ENDPOINT", "").rstrip("/")
        if not url:
            return None
        if url.endswith("/v1"):
            url = url[: -len("/v1")]
        # The guide's TOKEN is a Daytona preview token: the header it goes in is the services' to say.
        token_header, probe_headers = _installed().environment_headers()
        headers = {token_header: env["TOKEN"]} if env.get("TOKEN") else {}
        api_key = env.get("OPENAI_API_KEY") or env.get("SGLANG_API_KEY") or None
        if api_key == "EMPTY":
            api_key = None
        auth = "token" if headers else ("key" if api_key else "public")
        return cls(
            id="env",
            url=url,
            model=env.get("MODEL", ""),
            provider="env",
            auth=auth,
            headers=headers,
            api_key=api_key,
            token_header=token_header if headers else None,
            probe_headers=probe_headers,
        )
