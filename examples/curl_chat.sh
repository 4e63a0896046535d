#!/usr/bin/env bash
# Ask a gale deployment a question with curl.
#   GALE_ENDPOINT=$(gale endpoint my-bot) GALE_API_KEY=gale-... examples/curl_chat.sh "Hello!"
set -euo pipefail
question=${1:-"Which city is the capital of France?"}
model=${GALE_MODEL:-$(basename "$(dirname "$GALE_ENDPOINT")")}
body=$(python3 -c 'import json, sys; print(json.dumps({"model": sys.argv[1], "temperature": 0,
  "messages": [{"role": "user", "content": sys.argv[2]}]}))' "$model" "$question")
curl --silent --show-error --fail-with-body "$GALE_ENDPOINT/chat/completions" \
  -H "Authorization: Bearer $GALE_API_KEY" \
  -H 'Content-Type: application/json' \
  -d "$body"
echo
