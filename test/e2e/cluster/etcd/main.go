// Command etcd is the etcd server, built from the Go module proxy at the version in go.mod
// (the etcd repository's own main module carries replace directives, so `go install` of it fails).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
