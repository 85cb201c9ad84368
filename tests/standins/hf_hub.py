"""A local stand-in for the Hugging Face Hub routes sandserve uses, pointed at with HF_ENDPOINT: the
preflight's auth check, and the model's file sizes and ``config.json`` the fit check reads.

``GET /api/models/{org}/{name}/auth-check`` answers as the Hub does (huggingface_hub's ``hf_raise_for_status``
reads the ``X-Error-Code`` header): 200 when the repo is readable with the token sent; 403 + ``GatedRepo`` for
a gated repo whose terms the token's account has not accepted (or no token); 401 + ``RepoNotFound`` for a repo
that does not exist (the Hub does not tell a missing repo from a private one).

``GET /api/models/{org}/{name}`` (``model_info``; ``?blobs=True`` adds each file's ``size``) and
``GET /{org}/{name}/resolve/main/config.json`` answer for the repos in ``models`` (``{repo: {"files": {name:
size}, "config": {...}}}``), with the same access rules.

    with HubStandin(public={"openai/gpt-oss-20b"}, gated={"meta-llama/Llama-3.1-8B": {"hf_ok"}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HubStandin:
    def __init__(
        self,
        *,
        public: Iterable[str] = (),
        gated: Mapping[str, Iterable[str]] | None = None,
        models: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.models = {repo: dict(model) for repo, model in (models or {}).items()}
        self.public = set(public) | set(self.models)
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
                path, _, query = self.path.partition("?")
                prefix, suffix = "/api/models/", "/auth-check"
                token = auth.removeprefix("Bearer ") if auth else None
                model = hub.model_route(path)
                if model is not None:
                    repo, what = model
                    refused = hub.refusal(repo, token)
                    if refused:
                        return self._answer(*refused)
                    return self._json(hub.model_answer(repo, what, blobs="blobs=" in query))
                if not (path.startswith(prefix) and path.endswith(suffix)):
                    return self._answer(404, "RepoNotFound", "Not found")
                repo = path[len(prefix) : -len(suffix)]
                if repo in hub.public:
                    return self._answer(200, None, None)
                if repo in hub.gated:
                    if token in hub.gated[repo]:
                        return self._answer(200, None, None)
                    message = f"Access to model {repo} is restricted. You must have access to it."
                    return self._answer(403, "GatedRepo", message)
                return self._answer(401, "RepoNotFound", "Repository Not Found")

            def _json(self, data: Any) -> None:
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

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
        # Polled every 10 ms, not 0.5 s: leaving the block waits no half second for the loop to notice.
        threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True).start()
        return self

    def model_route(self, path: str) -> tuple[str, str] | None:
        """(repo, "info" | "config") for a model route of a repo in ``models``."""
        for repo in self.models:
            if path == f"/api/models/{repo}":
                return repo, "info"
            if path == f"/{repo}/resolve/main/config.json":
                return repo, "config"
        return None

    def refusal(self, repo: str, token: str | None) -> tuple[int, str, str] | None:
        if repo in self.gated and token not in self.gated[repo]:
            return 403, "GatedRepo", f"Access to model {repo} is restricted. You must have access to it."
        return None

    def model_answer(self, repo: str, what: str, *, blobs: bool) -> Any:
        model = self.models[repo]
        if what == "config":
            return model.get("config", {})
        files = model.get("files", {})
        siblings = [
            {"rfilename": name, **({"size": size, "blobId": f"{index:040x}"} if blobs else {})}
            for index, (name, size) in enumerate(files.items())
        ]
        return {"id": repo, "modelId": repo, "sha": "0" * 40, "private": False, "siblings": siblings}

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
