#!/bin/sh
# Regenerates the Go code for the device contract. Needs protoc (Debian:
# protobuf-compiler) and the two Go plugins at the versions pinned below.
set -eu
cd "$(dirname "$0")/.."
GOBIN="$(go env GOPATH)/bin"
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PATH="$GOBIN:$PATH" protoc --go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	proto/meshanics/device/v1/device.proto
