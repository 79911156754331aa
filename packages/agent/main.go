// Command mayfly-agent is the one static binary Mayfly puts into containers it runs (bind-mounted
// read-only, so any image works, with or without a libc or a shell). It has one job per verb:
//
//	mayfly-agent gate RELEASE-FILE -- ARGV...
//
// holds a container's own command at the door until the control plane creates RELEASE-FILE, then
// becomes that command (execve: same pid, same environment). A container can so be started — the
// slow part of bringing it up — while what it depends on is still starting.
//
//	mayfly-agent serve --socket PATH
//
// is a sandbox's agent: processes, files and ports, served over connections it dials to the
// control plane's socket (see serve.go).
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "gate":
		os.Exit(gate(os.Args[2:]))
	case "serve":
		os.Exit(serve(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: mayfly-agent gate RELEASE-FILE -- COMMAND [ARGS...]")
	fmt.Fprintln(os.Stderr, "       mayfly-agent serve [--socket PATH] [--spare N]")
	os.Exit(2)
}
