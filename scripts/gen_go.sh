#!/usr/bin/env bash
# Regenerate clients/go/memorydv1 from proto/ with protoc-gen-go + protoc-gen-go-grpc (Debian's).
#   scripts/gen_go.sh          rewrite the generated code
#   scripts/gen_go.sh --check  exit 1 if the committed code drifted from proto/
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/go_env.sh"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
protoc -I"$ROOT/proto" -I/usr/include \
  --go_out="$tmp" --go_opt=module=github.com/memoryd/memoryd/clients/go \
  --go-grpc_out="$tmp" --go-grpc_opt=module=github.com/memoryd/memoryd/clients/go \
  memoryd/v1/memory.proto
if [ "${1:-}" = "--check" ]; then
  if ! diff -ru "$ROOT/clients/go/memorydv1" "$tmp/memorydv1"; then
    echo "generated Go code drifted from proto/; run scripts/gen_go.sh" >&2
    exit 1
  fi
  exit 0
fi
rm -rf "$ROOT/clients/go/memorydv1"
cp -r "$tmp/memorydv1" "$ROOT/clients/go/memorydv1"
