// Command etcd is etcd's own server main (go.etcd.io/etcd/server/v3/etcdmain), built from the module
// proxy by scripts/kube.sh because no etcd binary can be downloaded here.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
