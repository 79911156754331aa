package main

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// probe tries a TCP connection to each ADDR (host:port or [host]:port; ${VAR}s expanded from the
// environment), all at once, and says which it reached. It is how the control plane checks that a
// cluster enforces the NetworkPolicies sandboxes depend on: run under a deny-all policy, it must
// reach none (and beside it, a pod allowed out must reach one). Exits 0 when none was reached, 3
// when one was, 2 on a bad address (an empty host or port: a variable that was not set).
func probe(args []string) int {
	if len(args) == 0 {
		usage()
	}
	addrs := make([]string, len(args))
	for i, arg := range args {
		host, port, err := net.SplitHostPort(os.ExpandEnv(arg))
		if err != nil || host == "" || port == "" {
			fmt.Fprintf(os.Stderr, "mayfly-agent probe: %q is no host:port (from %q)\n", os.ExpandEnv(arg), arg)
			return 2
		}
		addrs[i] = net.JoinHostPort(host, port)
	}
	reached := make([]bool, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Add(1)
		go func(i int, addr string) {
			defer wg.Done()
			if conn, err := net.DialTimeout("tcp", addr, 3*time.Second); err == nil {
				conn.Close()
				reached[i] = true
			}
		}(i, addr)
	}
	wg.Wait()
	code := 0
	for i, addr := range addrs {
		if reached[i] {
			fmt.Printf("reached %s\n", addr)
			code = 3
		} else {
			fmt.Printf("not reached %s\n", addr)
		}
	}
	return code
}
