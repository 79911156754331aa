package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// How often the release file is looked for: a stat is cheap, and the wait it adds is at most this.
const gatePoll = 10 * time.Millisecond

// gate waits until the release file exists, then replaces itself with the command. A stop signal
// while waiting ends it as the command would have been ended (128 + signal), at once.
func gate(args []string) int {
	if len(args) < 3 || args[1] != "--" {
		usage()
	}
	release, argv := args[0], args[2:]
	stops := make(chan os.Signal, 1)
	signal.Notify(stops, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP)
	ticker := time.NewTicker(gatePoll)
	for {
		if _, err := os.Stat(release); err == nil {
			break
		}
		select {
		case s := <-stops:
			return 128 + int(s.(syscall.Signal))
		case <-ticker.C:
		}
	}
	ticker.Stop()
	signal.Reset()

	file := argv[0]
	if !strings.Contains(file, "/") {
		found, err := exec.LookPath(file)
		if err != nil {
			// The words Docker uses when it cannot start a container's command.
			fmt.Fprintf(os.Stderr, "exec: %q: executable file not found in $PATH\n", file)
			return 127
		}
		file = found
	}
	err := syscall.Exec(file, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "exec %s: %v\n", file, err)
	if err == syscall.ENOENT {
		return 127
	}
	return 126
}
