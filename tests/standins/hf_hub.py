"""A local stand-in for the one Hugging Face Hub route sandserve's preflight uses, pointed at with
HF_ENDPOINT.

``GET /api/models/{org}/{name}/auth-check`` answers as the Hub does (huggingface_hub's ``hf_raise_for_status``
reads the ``X-Error-Code`` header): 200 when the repo is readable with the token sent; 403 + ``GatedRepo`` for
a gated repo whose terms the token's account has not accepted (or no token); 401 + ``RepoNotFound`` for a repo
that does not exist (the Hub does not tell a missing repo from a private one).

    with HubStandin(public={"openai/gpt-oss-20b"}, gated={"meta-llama/Llama-3.1-8B": {"hf_ok"}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubStandin:
    def __init__(
        self, *, public: Iterable[str] = (), gated: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        self.public = set(public)
        self.gated = {repo: set(tokens) for repo, tokens in (gated or {}).items()}
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubStandin:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                hub.requests.append((self.path, auth))
                prefix, suffix = "/api/models/", "/auth-check"
                if not (self.path.startswith(prefix) and self.path.endswith(suffix)):
                    return self._answer(404, "RepoNotFound", "Not found")
                repo = self.path[len(prefix) : -len(suffix)]
                token = auth.removeprefix("Bearer ") if auth else None
                if repo in hub.public:
                    return self._answer(200, None, None)
                if repo in hub.gated:
                    if token in hub.gated[repo]:
                        return self._answer(200, None, None)
                    message = f"Access to model {repo} is restricted. You must have access to it."
                    return self._answer(403, "GatedRepo", message)
                return self._answer(401, "RepoNotFound", "Repository Not Found")

            def _answer(self, status: int, code: str | None, message: str | None) -> None:
                body = json.dumps({"error": message} if message else {"ok": True}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if code:
                    self.send_header("X-Error-Code", code)
                if message:
                    self.send_header("X-Error-Message", message)
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
