package main

// What the agent needs where the control plane reaches a sandbox only through the platform's exec
// (Kubernetes): a first process that reaps, a relay from exec's stdio to the agent's socket, a way
// into images without a shell, and freezing without the cgroup freezer (a pod has no pause).

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// initProcess runs argv as its only child and reaps every process orphaned to it, as Docker's
// init does (the agent itself waits only for the commands it started). Stop signals go on to the
// child; its end is the container's, with its exit code.
func initProcess(args []string) int {
	if len(args) < 2 || args[0] != "--" {
		usage()
	}
	argv := args[1:]
	file, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "mayfly-agent init: %v\n", err)
		return 127
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	child, err := os.StartProcess(file, argv, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "mayfly-agent init: %v\n", err)
		return 126
	}
	go func() {
		for s := range signals {
			_ = child.Signal(s)
		}
	}()
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			// No children left at all: the child is gone without our seeing it (cannot happen).
			return 1
		}
		if pid != child.Pid {
			continue // an orphan, reaped
		}
		if status.Signaled() {
			return 128 + int(status.Signal())
		}
		return status.ExitStatus()
	}
}

// connect joins its stdin and stdout to one connection to the agent's socket, waiting up to ten
// seconds for the agent to listen (a sandbox just started). It ends when the agent closes the
// connection: one request (or stream, or tunnel) per connect.
func connect(args []string) int {
	if len(args) != 1 {
		usage()
	}
	var conn net.Conn
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		conn, err = net.Dial("unix", args[0])
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mayfly-agent connect: %v\n", err)
		return 1
	}
	go func() {
		_, _ = io.Copy(conn, os.Stdin)
		if unix, ok := conn.(*net.UnixConn); ok {
			_ = unix.CloseWrite()
		}
	}()
	_, _ = io.Copy(os.Stdout, conn)
	return 0
}

// install copies this binary to dest (mode 0755), making its directory.
func install(args []string) int {
	if len(args) != 1 {
		usage()
	}
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "mayfly-agent install: %v\n", err)
		return 1
	}
	self, err := os.Open("/proc/self/exe")
	if err != nil {
		return fail(err)
	}
	defer self.Close()
	if err := os.MkdirAll(filepath.Dir(args[0]), 0o755); err != nil {
		return fail(err)
	}
	out, err := os.OpenFile(args[0]+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return fail(err)
	}
	if _, err := io.Copy(out, self); err != nil {
		out.Close()
		return fail(err)
	}
	if err := out.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(args[0]+".tmp", args[0]); err != nil {
		return fail(err)
	}
	return 0
}

// freeze stops (or, thawing, continues) every process of the sandbox but the agent's own: not
// the first process (init), not the agent, and not what the platform's exec started (its parent
// is outside the sandbox: ppid 0), which is how the control plane reaches the agent. Everything
// the sandbox's code runs descends from the agent or was orphaned to init, so it is all found.
// A process forking while the stops go out has its child stopped in a later round; freezing ends
// once every such process is seen stopped.
func freeze(stop bool) error {
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	self := os.Getpid()
	for round := 0; round < 400; round++ {
		pending := 0
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return fail(500, "internal", "cannot list processes: %v", err)
		}
		for _, entry := range entries {
			pid, err := strconv.Atoi(entry.Name())
			if err != nil || pid == 1 || pid == self {
				continue
			}
			state, ppid, ok := procStat(pid)
			if !ok || ppid == 0 || state == 'Z' || state == 'X' {
				continue
			}
			stopped := state == 'T' || state == 't'
			if stop == stopped {
				continue
			}
			pending++
			_ = syscall.Kill(pid, sig)
		}
		// Continued once is enough (a stopped process cannot fork), and a process of the sandbox's
		// that stops itself again is its own business.
		if pending == 0 || (!stop && round > 0) {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fail(500, "internal", "processes kept changing while they were being %s", map[bool]string{true: "stopped", false: "continued"}[stop])
}

// procStat reads a process's state and parent from /proc/PID/stat (its name may hold spaces and
// parentheses: the fields that follow start after the last ')').
func procStat(pid int) (state byte, ppid int, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	text := string(data)
	end := strings.LastIndexByte(text, ')')
	if end < 0 {
		return 0, 0, false
	}
	fields := strings.Fields(text[end+1:])
	if len(fields) < 2 || len(fields[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(fields[1])
	if err != nil {
		return 0, 0, false
	}
	return fields[0][0], ppid, true
}
