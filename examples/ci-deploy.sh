#!/usr/bin/env bash
# Deploy from CI with flags only: no prompts, one JSON object on stdout.
# Pass --dry-run as the first argument to see the Serve config without deploying.
set -euo pipefail
gale deploy "$@" \
  --no-input --accept-terms --json \
  --model smollm2-135m-instruct \
  --name ci-smollm2 \
  --description "Deployed from CI" \
  --tag ci --tag smoke \
  --temperature 0 \
  --max-length 64 \
  --top-p 1 \
  --top-k 50 \
  --stop "###" \
  --batch-size 8 \
  --min-replicas 1 \
  --max-replicas 2 \
  --scale-up-delay 10 \
  --scale-down-delay 120 \
  --hardware cpu
