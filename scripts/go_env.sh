# Source me: the offline GOPATH-mode environment of clients/go (Debian's Go packages, no module download).
# Sets GOPATH, links clients/go into it under its import path, and builds protoc-gen-go once.
_memoryd_go_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/clients/go"
export GO111MODULE=off GOPROXY=off GOFLAGS=
export GOPATH="$_memoryd_go_root/gopath:/usr/share/gocode"
export GOCACHE="${GOCACHE:-$_memoryd_go_root/gopath/cache}"
MEMORYD_GO_PKG="$_memoryd_go_root/gopath/src/github.com/memoryd/memoryd/clients/go"
mkdir -p "$(dirname "$MEMORYD_GO_PKG")" "$_memoryd_go_root/gopath/bin"
[ -L "$MEMORYD_GO_PKG" ] || ln -sfn "$_memoryd_go_root" "$MEMORYD_GO_PKG"
export PATH="$_memoryd_go_root/gopath/bin:$PATH"
if [ ! -x "$_memoryd_go_root/gopath/bin/protoc-gen-go" ]; then
  go build -o "$_memoryd_go_root/gopath/bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
fi
export MEMORYD_GO_PKG
