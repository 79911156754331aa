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
// control plane's socket (see serve.go). Where the control plane reaches the sandbox only through
// the platform's exec (Kubernetes), the agent listens on a socket of its own instead:
//
//	mayfly-agent init -- mayfly-agent serve --listen @NAME
//	mayfly-agent connect @NAME
//	mayfly-agent idle
//
// init is the container's first process, reaping orphans as Docker's init does; the agent listens
// on an abstract socket (no file the sandbox could replace; the pod's containers share it); connect,
// run by the control plane through exec in a relay container beside the sandbox's (whose main
// process is idle), joins its stdin and stdout to one connection to the agent.
//
//	mayfly-agent install DEST
//
// copies the binary to DEST (an init container's job: images without a shell have no cp).
//
//	mayfly-agent probe HOST:PORT...
//
// tries to connect to each address and exits 3 if it reached one (probe.go).
//
//	mayfly-agent copy [--max-bytes=N] SRC DST
//
// copies a folder's contents (owners, modes, links kept; cloned where the file system can), how
// volumes are snapshotted and restored in a helper container (copy.go).
//
//	mayfly-agent pack [--max-bytes=N] SRC
//	mayfly-agent unpack [--max-bytes=N] DST
//
// the same as a stream, where the two folders are in different pods (Kubernetes; stream.go).
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
	case "init":
		os.Exit(initProcess(os.Args[2:]))
	case "connect":
		os.Exit(connect(os.Args[2:]))
	case "install":
		os.Exit(install(os.Args[2:]))
	case "idle":
		os.Exit(idle())
	case "probe":
		os.Exit(probe(os.Args[2:]))
	case "copy":
		os.Exit(copyTree(os.Args[2:]))
	case "pack":
		os.Exit(packTree(os.Args[2:]))
	case "unpack":
		os.Exit(unpackTree(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: mayfly-agent gate RELEASE-FILE -- COMMAND [ARGS...]")
	fmt.Fprintln(os.Stderr, "       mayfly-agent serve [--socket PATH] [--spare N] | [--listen PATH]")
	fmt.Fprintln(os.Stderr, "       mayfly-agent init -- COMMAND [ARGS...]")
	fmt.Fprintln(os.Stderr, "       mayfly-agent connect PATH")
	fmt.Fprintln(os.Stderr, "       mayfly-agent install DEST")
	fmt.Fprintln(os.Stderr, "       mayfly-agent idle")
	fmt.Fprintln(os.Stderr, "       mayfly-agent probe HOST:PORT...")
	fmt.Fprintln(os.Stderr, "       mayfly-agent copy [--max-bytes=N] SRC DST")
	fmt.Fprintln(os.Stderr, "       mayfly-agent pack [--max-bytes=N] SRC | mayfly-agent unpack [--max-bytes=N] DST")
	os.Exit(2)
}
