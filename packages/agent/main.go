// Command mayfly-agent is the one static binary Mayfly puts into containers it runs (bind-mounted
// read-only, so any image works, with or without a libc or a shell). It has one job per verb:
//
//	mayfly-agent gate RELEASE-FILE -- ARGV...
//
// holds a container's own command at the door until the control plane creates RELEASE-FILE, then
// becomes that command (execve: same pid, same environment). A container can so be started — the
// slow part of bringing it up — while what it depends on is still starting.
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
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: mayfly-agent gate RELEASE-FILE -- COMMAND [ARGS...]")
	os.Exit(2)
}
