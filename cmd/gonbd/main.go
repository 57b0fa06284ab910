// Command gonbd serves a disk image over NBD with qemu-nbd's command line.
package main

import (
	"fmt"
	"os"

	flag "github.com/spf13/pflag"
)

const version = "0.1.0"

func main() {
	showVersion := flag.BoolP("version", "V", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Printf("gonbd %s\n", version)
		return
	}
	fmt.Fprintln(os.Stderr, "gonbd: not implemented yet")
	os.Exit(1)
}
