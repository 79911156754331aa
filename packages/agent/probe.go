package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

// probe tries a TCP connection to each ADDR (host:port; ${VAR}s expanded from the environment) and
// says which it reached. It is how the control plane checks that a cluster enforces the
// NetworkPolicies sandboxes depend on: run under a deny-all policy, it must reach none. Exits 0
// when none was reached, 3 when one was, 2 on bad arguments.
func probe(args []string) int {
	if len(args) == 0 {
		usage()
	}
	reached := 0
	for _, arg := range args {
		addr := os.ExpandEnv(arg)
		if _, _, err := net.SplitHostPort(addr); err != nil {
			fmt.Fprintf(os.Stderr, "mayfly-agent probe: %q: %v\n", addr, err)
			return 2
		}
		conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			fmt.Printf("not reached %s: %v\n", addr, err)
			continue
		}
		conn.Close()
		fmt.Printf("reached %s\n", addr)
		reached++
	}
	if reached > 0 {
		return 3
	}
	return 0
}
