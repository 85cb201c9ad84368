"""Secrets masked by name, flag and URL; CLI values checked (no process started)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from sandserve.cli.values import Seconds, bind_widening, read_text_file
from sandserve.endpoint import Endpoint
from sandserve.masking import MASK, is_secret_name, mask_argv, mask_env, mask_signed_url, mask_text


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("HF_TOKEN", True),
        ("OPENAI_API_KEY", True),
        ("--api-key", True),
        ("DAYTONA_JWT_TOKEN", True),
        ("X-Daytona-Preview-Token", True),
        ("MY_DB_PASSWORD", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("MAX_TOKENS", False),
        ("--max-total-tokens", False),
        ("--auth", False),
        ("PATH", False),
        ("SGLANG_ATTENTION_BACKEND", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--api-key", "k1", "--port", "8"], ["--api-key", MASK, "--port", "8"]),
        (["--api-key=k1"], [f"--api-key={MASK}"]),
        (["--hf-token", "t", "--max-total-tokens", "9"], ["--hf-token", MASK, "--max-total-tokens", "9"]),
        (["--tp", "2"], ["--tp", "2"]),
    ],
)
def test_secret_flags_are_masked(argv: list[str], shown: list[str]) -> None:
    assert mask_argv(argv) == shown


def test_secret_env_values_are_masked() -> None:
    env = {"HF_TOKEN": "hf_x", "OPENAI_API_KEY": "sk", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    assert mask_env(env) == {
        "HF_TOKEN": MASK,
        "OPENAI_API_KEY": MASK,
        "PYTORCH_CUDA_ALLOC_CONF": env["PYTORCH_CUDA_ALLOC_CONF"],
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:5/signed/8000-AbCdEf123456789xyz", f"http://127.0.0.1:5/signed/8000-{MASK}"),
        (
            "https://8000-abcdefghijklmnop1234.proxy.daytona.works/v1",
            f"https://8000-{MASK}.proxy.daytona.works/v1",
        ),
        ("https://8000-3f2a1b4c.proxy.daytona.works", "https://8000-3f2a1b4c.proxy.daytona.works"),
    ],
)
def test_signed_url_tokens_are_masked(url: str, shown: str) -> None:
    assert mask_signed_url(url) == shown


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("server_args=ServerArgs(model_path='m', api_key='sk-abc123', port=8)", "sk-abc123"),
        ('{"api_key": "sk-json-1234"}', "sk-json-1234"),
        ("launched with --api-key sk-flag-5678 --port 1", "sk-flag-5678"),
        ("the token is known-value-42 here", "known-value-42"),
    ],
)
def test_secrets_in_free_text_are_masked(text: str, hidden: str) -> None:
    shown = mask_text(text, {"known-value-42"})
    assert hidden not in shown and MASK in shown


@pytest.mark.parametrize(
    "text", ["max_tokens=2048 is over the limit", "--max-total-tokens 4096", "tokens: 1234"]
)
def test_counts_named_like_tokens_are_not_masked(text: str) -> None:
    assert mask_text(text) == text


@pytest.mark.parametrize(
    ("args", "widened"),
    [
        (("--host", "0.0.0.0"), "0.0.0.0"),
        (("--host=::",), "::"),
        (("--host 0.0.0.0",), "0.0.0.0"),
        (("--host", "192.168.1.5"), "192.168.1.5"),
        (("--host", "127.0.0.1"), None),
        (("--host", "localhost"), None),
        (("--host=[::1]",), None),
        (("--port", "0.0.0.0"), None),
        ((), None),
    ],
)
def test_engine_flags_that_widen_the_bind_address(args: tuple[str, ...], widened: str | None) -> None:
    assert bind_widening(args) == widened


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon", "1e9"])
def test_bad_seconds_are_refused(value: str) -> None:
    with pytest.raises(click.BadParameter):
        Seconds().convert(value, None, None)


def test_good_seconds_pass() -> None:
    assert Seconds().convert("2.5", None, None) == 2.5


def test_text_files_must_be_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(click.BadParameter, match="not UTF-8 text"):
        read_text_file(bad, "--schema")
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf{}")
    assert read_text_file(bom, "--schema") == "{}"


def test_export_lines_are_shell_quoted() -> None:
    endpoint = Endpoint(id="e", url="http://h:1", model="My Model (q4)", provider="local")
    assert endpoint.export_lines() == [
        "export ENDPOINT=http://h:1",
        "export MODEL='My Model (q4)'",
        "export TOKEN=''",
    ]
