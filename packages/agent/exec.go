package main

// What the agent needs where the control plane reaches a sandbox only through the platform's exec
// (Kubernetes): a first process that reaps, a relay from exec's stdio to the agent's socket (run in
// a container of its own beside the sandbox's, which the sandbox cannot touch), a way into images
// without a shell, and freezing without the cgroup freezer (a pod has no pause).

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
	undumpable()
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

// undumpable keeps processes of the same uid (the sandbox's code) out of this one's /proc entries:
// no ptrace, no opening of its file descriptors (its stdout is the container's log, which the
// platform stores on the node).
func undumpable() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0)
}

// idle is the relay container's main process: it does nothing until it is stopped.
func idle() int {
	stops := make(chan os.Signal, 1)
	signal.Notify(stops, syscall.SIGTERM, syscall.SIGINT)
	<-stops
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

// freeze stops (or, thawing, continues) every process of the sandbox but the first one (init)
// and the agent. Everything the sandbox's code runs descends from the agent or was orphaned to
// init, so it is all found; the control plane's way in (connect) runs in another container. A
// process forking while the stops go out has its child stopped in a later round; freezing ends once
// every thread of every such process is seen stopped (a process whose first thread has exited shows
// as a zombie while its other threads run on).
func freeze(stop bool) error {
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	self := os.Getpid()
	var left []string
	for round := 0; round < 400; round++ {
		pending := 0
		left = left[:0]
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return fail(500, "internal", "cannot list processes: %v", err)
		}
		for _, entry := range entries {
			pid, err := strconv.Atoi(entry.Name())
			if err != nil || pid == 1 || pid == self {
				continue
			}
			stopped, ok := threadsStopped(pid)
			if !ok || stop == stopped {
				continue
			}
			pending++
			if len(left) < 5 {
				left = append(left, entry.Name()+":"+threadStates(pid))
			}
			_ = syscall.Kill(pid, sig)
		}
		// Continued once is enough (a stopped process cannot fork), and a process of the sandbox's
		// that stops itself again is its own business.
		if pending == 0 || (!stop && round > 0) {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fail(500, "internal", "processes kept changing while they were being stopped (pid:thread states %s)", strings.Join(left, " "))
}

// threadsStopped says whether every live thread of a process is stopped; ok is false for a
// process that is gone or has no live thread left (a zombie: nothing to stop).
func threadsStopped(pid int) (stopped bool, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return false, false
	}
	live, halted := 0, 0
	for _, task := range tasks {
		state, found := taskState(dir + "/" + task.Name() + "/stat")
		if !found || state == 'Z' || state == 'X' {
			continue
		}
		live++
		// Only a running or sleeping thread can go on to run the process's code (fork, say). One in
		// uninterruptible sleep (a vfork parent waiting for its child, I/O) takes a pending stop
		// before it returns to that code.
		if state != 'R' && state != 'S' {
			halted++
		}
	}
	return live > 0 && halted == live, live > 0
}

// threadStates lists the states of a process's threads (for an error message).
func threadStates(pid int) string {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, _ := os.ReadDir(dir)
	states := ""
	for _, task := range tasks {
		if state, ok := taskState(dir + "/" + task.Name() + "/stat"); ok {
			states += string(state)
		}
	}
	return states
}

// taskState reads a thread's state from its stat file (its name may hold spaces and parentheses:
// the fields that follow start after the last ')').
func taskState(path string) (byte, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	text := string(data)
	end := strings.LastIndexByte(text, ')')
	if end < 0 {
		return 0, false
	}
	fields := strings.Fields(text[end+1:])
	if len(fields) < 1 || len(fields[0]) != 1 {
		return 0, false
	}
	return fields[0][0], true
}
