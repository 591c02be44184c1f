// Command matchstream is the MatchStream appliance: the daemon (serve) and its operator tools in one
// binary. main builds the CLI app, runs it and maps the error to an exit code; each subcommand lives
// in its own file.
package main

import (
	"fmt"
	"os"
)

// version is stamped at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	err := newApp().Run(os.Args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "matchstream: "+err.Error())
		if h := hintOf(err); h != "" {
			fmt.Fprintln(os.Stderr, "hint: "+h)
		}
	}
	os.Exit(exitCode(err))
}
