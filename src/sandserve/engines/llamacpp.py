"""llama.cpp's llama-server: the CPU engine for machines with no GPU (facts/local-engine.md)."""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandserve.engines.base import (
    Engine,
    GenerateCall,
    Launch,
    LogSignature,
    PrepareEvents,
    ReadinessProbe,
    Tokenize,
)
from sandserve.engines.batch_server import BATCH_NICE_ENV
from sandserve.engines.llamacpp_adapter import API_KEY_ENV, LISTENING_LINE
from sandserve.engines.load_formats import LoadFields, parse_slots
from sandserve.errors import CapabilityError, ModelFileNotFoundError
from sandserve.presets import not_a_model_file_error
from sandserve.processes import live_processes
from sandserve.results import Capabilities, Constraint, ServerInfo
from sandserve.spec import ServeSpec

if TYPE_CHECKING:
    from sandserve.presets import Preset

#: Per slot when a model file does not say how long a context it was trained for.
FALLBACK_CONTEXT = 8192
#: Per slot at most: room for the guide's 3,000-token passages and their answers, at a bounded KV memory.
MAX_SLOT_CONTEXT = 8192
#: Finished slots' prompts kept in RAM (MiB) for later requests that share their prefix: a 3,000-token passage
#: of SmolLM2-135M is about 70 MB of KV, so this holds the guide's passages for a second pass.
CACHE_RAM_MIB = 4096
#: The name a llama-server process runs under (/proc/PID/comm).
LLAMA_SERVER_PROCESS = "llama-server"
_PHASES = (
    ("adapter up", LISTENING_LINE),
    ("loading weights", r"load_model: loading model"),
    ("kv cache allocated", r"load_model: initializing, n_slots"),
    ("weights loaded", r"llama_server: model loaded"),
    ("listening", r"llama_server: listening on"),
)

_SIGNATURES: tuple[LogSignature, ...] = (
    # llama.cpp's own argument parser (common/arg.cpp), before anything is loaded.
    LogSignature.of(
        r"^error: invalid argument: (?P<flag>\S+)",
        "llama-server has no flag {flag}",
        "Check its spelling, or leave it out: the flags after -- go to llama-server as they are "
        "(llama.cpp lists its flags in tools/server/README.md; `sandserve up --dry-run` shows the command).",
    ),
    LogSignature.of(
        r'^error while handling argument "(?P<flag>[^"]+)": (?P<reason>.+)$',
        "llama-server refused the value given to {flag} ({reason})",
        "Give {flag} a value it takes, or leave it out (the flags after -- go to llama-server as they are).",
    ),
    LogSignature.of(
        rf"sandserve adapter: {BATCH_NICE_ENV} must be a niceness from 0 to 19 \(got (?P<value>.+)\)\.$",
        f"{BATCH_NICE_ENV} is {{value}}, not a niceness from 0 to 19",
        f"Unset {BATCH_NICE_ENV} (the batch's llama-server then runs under SCHED_IDLE), or set it to 0-19.",
    ),
    LogSignature.of(
        r"couldn't bind HTTP server socket|sandserve adapter: cannot listen",
        "the port is already taken by another process",
        "Pick another --port (or leave it out: a free one is chosen), or stop what listens there.",
    ),
    LogSignature.of(
        r"error loading model|failed to load model|gguf_init_from_file.*failed|invalid magic",
        "the model file could not be loaded (corrupt, truncated, or not a GGUF llama.cpp understands)",
        "Check the file (re-download or re-convert it to GGUF), or leave --model out to serve the default "
        "local model (SmolLM2-135M-Instruct).",
    ),
    LogSignature.of(
        r"failed to allocate|std::bad_alloc|Cannot allocate memory",
        "the machine ran out of memory while loading the model",
        "Use a smaller model or quantisation, or a smaller --context-length.",
    ),
    LogSignature.of(
        r"illegal instruction|Illegal instruction",
        "this CPU lacks an instruction the engine was built for (AVX2/FMA/F16C)",
        "Run on a CPU with AVX2, or set SANDSERVE_LLAMA_SERVER to a llama-server built for this machine.",
    ),
)


def _is_gguf(path: Path) -> bool:
    """Whether ``path`` is a file that starts as every GGUF file does (the magic ``GGUF``)."""
    try:
        with path.open("rb") as file:
            return file.read(4) == b"GGUF"
    except OSError:
        return False


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def threads_per_core(cpu_dir: Path = Path("/sys/devices/system/cpu/cpu0/topology")) -> int:
    """Hardware threads on one physical core (2 with SMT/hyper-threading), from the kernel's topology; 1
    where it does not say."""
    try:
        siblings = (cpu_dir / "thread_siblings_list").read_text().strip()
    except OSError:
        return 1
    count = 0
    for part in siblings.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            return 1
        count += int(last) - int(first) + 1 if last else 1
    return max(1, count)


def running_llama_servers(proc: Path = Path("/proc")) -> int:
    """llama-server processes running on this machine now (other endpoints', a local fleet's workers); 0
    where the system does not say."""
    return sum(name == LLAMA_SERVER_PROCESS for _, name, _ in live_processes(proc))


def busy_cores(looks: int = 5, apart_s: float = 0.01, stat_file: Path = Path("/proc/stat")) -> int:
    """Cores that other work keeps busy now: the threads ready to run besides this one (Linux's
    ``procs_running``), the median of a few looks; 0 where the system does not say."""
    counts = []
    for look in range(looks):
        try:
            stat = stat_file.read_text()
        except OSError:
            return 0
        match = re.search(r"^procs_running (\d+)", stat, re.MULTILINE)
        if match is None:
            return 0
        counts.append(int(match.group(1)) - 1)  # this thread is running as it reads
        if look < looks - 1:
            time.sleep(apart_s)
    return max(0, sorted(counts)[len(counts) // 2])


@dataclass(frozen=True)
class MachineFit:
    """Engine flags sized to this machine when the server starts: threads from the cores this process may
    use, less those other work keeps busy, shared by the llama-servers that run here; slots for batches.
    bench/bench_threads.py searches ``-t``/``-tb``/``-np`` and prints these beside the best it finds.

    Busy cores count because llama.cpp's threads wait for each other at every step: one thread that has to
    wait for a core holds up the rest (on 2 cores kept busy by other work, ``-tb 2`` decoded several times
    slower than ``-tb 1``)."""

    cores: int = field(default_factory=available_cores)
    busy: int = field(default_factory=busy_cores)
    """Cores kept busy by other work when the server starts."""
    servers: int = 1
    """llama-servers sharing these cores (a local fleet's workers): each keeps to its share of them."""
    others: int = field(default_factory=running_llama_servers)
    """llama-servers already running here when this one starts (a fleet's earlier workers among them): idle
    now, they may compute at any moment, so they count as sharing the cores."""
    smt: int = field(default_factory=threads_per_core)
    """Hardware threads a physical core runs (2 with hyper-threading)."""

    def shared_by(self, servers: int) -> MachineFit:
        return replace(self, servers=max(1, servers))

    @property
    def share(self) -> int:
        """The cores this server may take: the idle ones (at least one), divided between the servers that
        share them, those already running included."""
        idle = max(1, self.cores - self.busy)
        return max(1, idle // max(self.servers, self.others + 1))

    @property
    def batch_threads(self) -> int:
        """Steps of more than one token (a prompt, or several requests decoding together): every core of the
        share. Servers that each took every core spin-waited each other down to under a token a second."""
        return self.share

    @property
    def threads(self) -> int:
        """Steps of one token (one request decoding alone): the share's physical cores, as llama.cpp counts
        by default (a core's second hardware thread adds nothing to a step that reads every weight once). On
        an idle 2-core machine one request alone decoded 1.7x faster with two threads than with one
        (bench/bench_threads.py); on cores other work keeps busy one thread is far faster, which ``share``
        already leaves out."""
        return max(1, self.share // self.smt)

    @property
    def slots(self) -> int:
        """Requests decoded together: batch work (classify, the batch runner) keeps them all busy. From the
        cores alone, not how busy they are now, so a server's capacity does not depend on the moment."""
        return max(2, min(8, 2 * self.cores // self.servers))


@lru_cache(maxsize=16)
def trained_context(model_path: str) -> int:
    """The context length the model was trained for, from its GGUF header (FALLBACK_CONTEXT if unreadable)."""
    try:
        import gguf

        reader = gguf.GGUFReader(model_path)
        arch_field = reader.fields["general.architecture"]
        arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
        ctx_field = reader.fields[f"{arch}.context_length"]
        return int(ctx_field.parts[ctx_field.data[0]][0])
    except (OSError, KeyError, ValueError, IndexError, ImportError):
        return FALLBACK_CONTEXT


@dataclass(frozen=True)
class LlamaCppEngine(Engine):
    binary: str = "llama-server"
    fit: MachineFit = field(default_factory=MachineFit)

    name = "llamacpp"
    label = "llama.cpp"
    owned_by = "llamacpp"
    runs_on_cpu = True
    # llama-server is built from source on this machine and its model is a file here: a sandbox started from
    # the stock SGLang image has neither.
    runs_in_sandbox_image = False
    # Regexes are compiled to GBNF by sandserve (gbnf.py), so what comes back is checked against them.
    checks_constrained_output = True
    load_route = "/slots"
    # It counts only uncached prompt tokens; the cached ones are a counter apart.
    metric_names = {
        "running": "llamacpp:requests_processing",
        "queued": "llamacpp:requests_deferred",
        "generated": "llamacpp:tokens_predicted_total",
        "cached": "llamacpp:prompt_tokens_cached_total",
        "prompt_uncached": "llamacpp:prompt_tokens_total",
    }

    @classmethod
    def load_fields(cls, body: Any) -> LoadFields:
        return parse_slots(body)

    capabilities = Capabilities(
        reasoning_effort=False,
        regex=True,
        ebnf=True,
        native_generate=True,  # the adapter translates SGLang's /generate
        cache_report=True,
    )
    # A one-token completion, which reaches the people's llama-server through the adapter: a real
    # generation. Normal priority: a low-priority one would start the batch's llama-server (batch_server.py).
    readiness = ReadinessProbe(
        "POST", "/v1/completions", {"prompt": "Ready?", "max_tokens": 1, "temperature": 0}
    )
    phase_patterns = tuple((name, re.compile(pattern)) for name, pattern in _PHASES)
    signatures = _SIGNATURES
    info_path = "/props"

    def summarise_info(self, data: dict[str, Any]) -> ServerInfo:
        settings = data.get("default_generation_settings") or {}
        # llama-server analyses the model's chat template: one with no tool syntax cannot call tools.
        template = data.get("chat_template_caps") or {}
        tools = bool(template.get("supports_tools") and template.get("supports_tool_calls"))
        return ServerInfo().with_values(
            max_running_requests=data.get("total_slots"),
            context_len=settings.get("n_ctx"),
            version=data.get("build_info"),
            capabilities=replace(self.capabilities, tool_calls=tools) if template else None,
        )

    def slot_context(self, spec: ServeSpec) -> int:
        """Each slot's context: what was asked, else the model's trained context (bounded, for memory)."""
        if spec.context_length:
            return spec.context_length
        return min(trained_context(spec.model), MAX_SLOT_CONTEXT)

    def launch(self, spec: ServeSpec, *, host: str, port: int, api_key: str | None) -> Launch:
        """llama-server behind the adapter (llamacpp_adapter.py), which answers on ``host:port``: on this
        machine only (``runs_in_sandbox_image`` is False, so no remote provider launches it).

        The prompt cache stays on (llama-server's default ``cache_prompt``) and finished slots are kept in a
        RAM cache (``--cache-ram``), so a second pass over the same passages finds them. The API key goes to
        the adapter through its environment, never on a command line."""
        fit = self.fit.shared_by(spec.resources.servers_on_machine)
        slots = fit.slots
        server = [
            self.binary,
            "-m",
            spec.model,
            "--alias",
            spec.served_name,
            "-c",
            str(self.slot_context(spec) * slots),
            "-np",
            str(slots),
            "-t",
            str(fit.threads),
            "-tb",
            str(fit.batch_threads),
            "--cache-ram",
            str(CACHE_RAM_MIB),
            "--jinja",
            "--reasoning-format",
            "deepseek" if spec.engine_settings.reasoning_parser else "none",
            "--no-ui",
            "--offline",
            "--metrics",
            *spec.engine_settings.extra_args,
        ]
        env = dict(spec.engine_settings.env)
        secrets = frozenset({api_key} if api_key else ())
        adapter = [
            sys.executable,
            "-m",
            "sandserve.engines.llamacpp_adapter",
            "--host",
            host,
            "--port",
            str(port),
        ]
        if api_key:
            env[API_KEY_ENV] = api_key
        return Launch(argv=[*adapter, "--", *server], env=env, secrets=secrets)

    def kv_pool_tokens(self, log_text: str) -> int | None:
        """Every slot's context together: llama-server splits its KV cache evenly between slots."""
        match = re.search(r"n_slots = (\d+), n_ctx_slot = (\d+)", log_text)
        return int(match.group(1)) * int(match.group(2)) if match else None

    # --- choosing and preparing: the binary is built and the model fetched or written on first use ----------

    @classmethod
    def claims_model(cls, model: str) -> bool:
        return model.endswith(".gguf") or _is_gguf(Path(model).expanduser())

    @classmethod
    def resolve_model(cls, model_id: str, preset: Preset | None) -> str:
        if preset is not None and preset.built_in:
            return model_id
        path = Path(model_id).expanduser()
        if not path.is_file():
            raise ModelFileNotFoundError(path)
        if not _is_gguf(path):
            raise not_a_model_file_error(path)
        return str(path.resolve())

    @classmethod
    def planned(cls, spec: ServeSpec) -> LlamaCppEngine:
        from sandserve.engines.llamacpp_build import llama_server_path

        binary = llama_server_path()
        return cls(binary=str(binary) if binary else "llama-server")

    def prepare(self, spec: ServeSpec, events: PrepareEvents) -> tuple[ServeSpec, LlamaCppEngine]:
        from sandserve.engines.llamacpp_build import ensure_llama_server
        from sandserve.engines.modelfetch import local_model_file

        def on_build(progress: object) -> None:
            events.build_progress(
                getattr(progress, "done", 0), getattr(progress, "total", 0), getattr(progress, "message", "")
            )

        binary = ensure_llama_server(on_progress=on_build)
        spec = replace(spec, model=str(local_model_file(spec.model, events.status)))
        return spec, LlamaCppEngine(binary=str(binary))

    def plan_details(self, spec: ServeSpec) -> dict[str, Any]:
        from sandserve.engines.modelfetch import describe_local_model

        built = self.binary != "llama-server"
        return {
            "model": describe_local_model(spec.model),
            "binary": self.binary if built else "llama-server (built from source on first use)",
        }

    # --- the dialect: GBNF grammars, completions for raw text, thinking off under a constraint -------------

    def constraint_fields(self, constraint: Constraint) -> dict[str, Any]:
        return {"grammar": llamacpp_grammar(constraint)}

    def constrained_chat_fields(self) -> dict[str, Any]:
        # With thinking on, a grammar lets a <think> block come first, and a small model can wander there
        # until it runs out of tokens.
        return {"chat_template_kwargs": {"enable_thinking": False}}

    def constraint_route(self, kind: str) -> str:
        return "llama.cpp completions, regex -> GBNF" if kind == "regex" else "llama.cpp GBNF grammar"

    def tokenize_call(self, text: str, *, parse_special: bool = True) -> GenerateCall:
        return GenerateCall("/tokenize", {"content": text, "parse_special": parse_special})

    def template_call(self, messages: list[dict[str, Any]]) -> GenerateCall:
        return GenerateCall("/apply-template", {"messages": messages})

    def generate_call(
        self, model: str, text: str, constraint: Constraint | None, sampling: dict[str, Any]
    ) -> GenerateCall:
        # llama-server has no /generate: raw text goes to its completions route.
        body: dict[str, Any] = {"model": model, "prompt": text, "max_tokens": sampling["max_new_tokens"]}
        body.update({key: sampling[key] for key in ("temperature", "stop") if key in sampling})
        if constraint is not None:
            if constraint.kind == "json_schema":
                body["json_schema"] = constraint.value
            else:
                body["grammar"] = llamacpp_grammar(constraint)
        return GenerateCall("/v1/completions", body)

    def read_generation(self, answer: Any) -> tuple[str, str]:
        choice = (answer.get("choices") or [{}])[0]
        return choice.get("text") or "", "length" if choice.get("finish_reason") == "length" else "stop"

    def reasoning_effort_fields(self, effort: str) -> tuple[dict[str, Any], str]:
        raise CapabilityError(
            "Reasoning effort",
            self.name,
            hint="llama.cpp has no reasoning_effort dial of its own; serve gpt-oss with SGLang "
            "(`sandserve up --provider daytona`), or a preset whose thinking can be switched off.",
        )

    def brief_answer_fields(self) -> dict[str, Any]:
        # No effort knob, and its JSON grammar would let a thinking block come first.
        return {"chat_template_kwargs": {"enable_thinking": False}}

    def force_tool_call(
        self, params: dict[str, Any], tool_name: str, tool_specs: list[dict[str, Any]], tokenize: Tokenize
    ) -> dict[str, Any]:
        # tool_choice forces nothing on llama.cpp: llamacpp_tools.py has the recipe that does.
        from sandserve.engines.llamacpp_tools import forced_call_params

        return forced_call_params(params, tool_specs, tokenize)

    def after_forced_call(self, params: dict[str, Any]) -> dict[str, Any]:
        # A model that had to be forced would only stumble into another call (and a random one writes
        # arguments that run past max_tokens, which llama.cpp answers with a 500): ask for the answer.
        return {**params, "tool_choice": "none"}


def llamacpp_grammar(constraint: Constraint) -> str:
    """A regex compiled to GBNF; an EBNF grammar passed as GBNF (the same notation family)."""
    from sandserve.engines.gbnf import regex_to_gbnf

    return regex_to_gbnf(constraint.value) if constraint.kind == "regex" else str(constraint.value)
