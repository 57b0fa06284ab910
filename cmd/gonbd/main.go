// Command gonbd serves a disk image over NBD with qemu-nbd's command line.
package main

import (
	"os"
)

const version = "0.1.0"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
