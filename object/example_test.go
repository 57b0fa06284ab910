package object_test

import (
	"fmt"
	"os"

	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/object"
)

// An authorization object from the registry is what nbd.ServerConfig.Authz
// takes.
var _ nbd.Authorizer = object.Authorizer(nil)

// Example shows how a command handles its --object arguments: help first,
// then the objects in order, then lookups by id.
func Example() {
	specs := []string{
		"secret,id=sec0,data=hunter2",
		"authz-list,id=auth0,rules.0.match=CN=*.example.com,rules.0.policy=allow,rules.0.format=glob",
	}
	for _, spec := range specs {
		if object.PrintHelp(os.Stdout, spec) {
			return // as qemu-nbd, exit successfully after help
		}
	}

	registry, err := object.ParseAll(specs)
	if err != nil {
		fmt.Println(err)
		return
	}
	authz, err := registry.Authz("auth0")
	if err != nil {
		fmt.Println(err)
		return
	}
	allowed, _ := authz.IsAllowed("CN=laptop.example.com")
	fmt.Println("allowed:", allowed)

	_, err = registry.TLSCreds("tls0", object.EndpointServer)
	fmt.Println(err)
	// Output:
	// allowed: true
	// no TLS credentials with id "tls0": create them with --object tls-creds-x509,id=tls0,endpoint=server,dir=/path (or tls-creds-psk)
}

func ExamplePrintHelp() {
	object.PrintHelp(os.Stdout, "authz-simple,help")
	// Output:
	// authz-simple options:
	//   identity=<string>      - the one identity allowed: a PSK username or an x509 distinguished name
}
