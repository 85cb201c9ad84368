#!/usr/bin/env bash
# One chat request with curl, in every auth mode. Set the variables with:  eval "$(sandserve env [ID])"
#   token mode:   ENDPOINT + TOKEN           (sent as the x-daytona-preview-token header)
#   signed URL:   ENDPOINT                   (the token is part of the URL; it expires on schedule)
#   key mode:     ENDPOINT + OPENAI_API_KEY  (sent as Authorization: Bearer, checked by SGLang itself)
#   public/local: ENDPOINT
# Usage: examples/query.sh ["your prompt"]        MAX_TOKENS=... to change the budget (default 4096)
set -euo pipefail
: "${ENDPOINT:?set ENDPOINT first: eval \"\$(sandserve env)\"}"

auth=(-H "X-Daytona-Skip-Preview-Warning: true")
[[ -n "${TOKEN:-}" ]] && auth+=(-H "x-daytona-preview-token: $TOKEN")
[[ -n "${OPENAI_API_KEY:-}" ]] && auth+=(-H "Authorization: Bearer $OPENAI_API_KEY")

if [[ -z "${MODEL:-}" ]]; then  # ask the server which model it serves
  MODEL=$(curl -fsS "${auth[@]}" "$ENDPOINT/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
fi
prompt=${1:-"Write a haiku about a sandbox where AI agents run code."}
body=$(python3 -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "max_tokens": int(sys.argv[3]),
  "messages": [{"role": "user", "content": sys.argv[2]}]}))' "$MODEL" "$prompt" "${MAX_TOKENS:-4096}")

curl -sS --fail-with-body --connect-timeout 30 --max-time 300 "$ENDPOINT/v1/chat/completions" \
  "${auth[@]}" -H "Content-Type: application/json" -d "$body"
echo
