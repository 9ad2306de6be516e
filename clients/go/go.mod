module github.com/memoryd/memoryd/clients/go

// Built and tested offline in GOPATH mode against Debian bookworm's packages
// (grpc-go 1.33.3, protobuf-go 1.28.1, golang/protobuf 1.5.2): see README.md.
// go.sum is not committed because this repository's CI cannot reach the Go module
// proxy; with network access, `go mod tidy` writes it.
go 1.19

require (
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
