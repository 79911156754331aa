package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// serve runs the sandbox agent: an HTTP/1.1 server whose connections it dials itself, to a Unix
// socket the control plane listens on (mounted read-only into the sandbox). The sandbox needs no
// network, nothing in it listens, and the control plane never opens a path the sandbox controls.
// A few connections are kept dialled and idle, so a request never waits for one.
func serve(args []string) int {
	flags := flag.NewFlagSet("serve", flag.ExitOnError)
	socket := flags.String("socket", "/.mayfly/run/agent.sock", "the control plane's socket")
	spare := flags.Int("spare", 2, "idle connections kept dialled")
	listen := flags.String("listen", "", "listen on this socket instead of dialling the control plane's")
	_ = flags.Parse(args)

	// A uid the image has no passwd entry for is its own name.
	name, home := strconv.Itoa(os.Getuid()), os.Getenv("HOME")
	if self, err := user.Current(); err == nil {
		name = self.Username
		if home == "" {
			home = self.HomeDir
		}
	}
	if home == "" {
		home = "/"
	}
	reserveThreads(spareThreads)
	a := &agent{
		user:      name,
		home:      home,
		processes: map[int]*process{},
		defaults:  map[string]string{},
	}
	var server *http.Server
	var listener net.Listener
	if *listen != "" {
		// Only the control plane's `connect` (through the platform's exec) dials it. An abstract
		// name (@NAME) is no file: nothing in the sandbox can remove it and listen in its place.
		undumpable()
		if !strings.HasPrefix(*listen, "@") {
			_ = os.Remove(*listen)
		}
		unix, err := net.Listen("unix", *listen)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mayfly-agent: %v\n", err)
			return 1
		}
		if !strings.HasPrefix(*listen, "@") {
			_ = os.Chmod(*listen, 0o600)
		}
		listener, server = unix, &http.Server{Handler: a}
	} else {
		reverse := &reverseListener{path: *socket, spare: *spare, states: map[net.Conn]http.ConnState{}}
		reverse.cond = sync.NewCond(&reverse.mu)
		// No read timeouts: idle connections wait for the control plane (the only client) as long as it likes.
		listener, server = reverse, &http.Server{Handler: a, ConnState: reverse.track}
	}
	if err := server.Serve(listener); err != nil {
		fmt.Fprintf(os.Stderr, "mayfly-agent: %v\n", err)
		return 1
	}
	return 0
}

// reverseListener "accepts" connections by dialling the control plane, as long as fewer than
// `spare` of its connections are idle. Dialling failures (a control plane restarting) are retried.
type reverseListener struct {
	path   string
	spare  int
	mu     sync.Mutex
	cond   *sync.Cond
	idle   int
	states map[net.Conn]http.ConnState
}

func (l *reverseListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	for l.idle >= l.spare {
		l.cond.Wait()
	}
	l.idle++ // idle from its dialling until its first request
	l.mu.Unlock()
	backoff := 2 * time.Millisecond
	for {
		conn, err := net.Dial("unix", l.path)
		if err == nil {
			return conn, nil
		}
		time.Sleep(backoff)
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

func (l *reverseListener) Close() error   { return nil }
func (l *reverseListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *reverseListener) track(conn net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	previous, known := l.states[conn]
	wasIdle := !known || previous == http.StateNew || previous == http.StateIdle
	isIdle := state == http.StateNew || state == http.StateIdle
	if state == http.StateClosed || state == http.StateHijacked {
		delete(l.states, conn)
		isIdle = false
	} else {
		l.states[conn] = state
	}
	if wasIdle && !isIdle {
		l.idle--
	} else if !wasIdle && isIdle {
		l.idle++
	}
	l.cond.Broadcast()
}

type agent struct {
	user string
	home string

	mu        sync.Mutex
	processes map[int]*process
	defaults  map[string]string
	watches   int // directory watches open now
}

// apiError is what every failed request answers, with its HTTP status.
type apiError struct {
	status  int
	Code    string `json:"code"`
	Message string `json:"error"`
}

func (e *apiError) Error() string { return e.Message }

func fail(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, value any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(value)
}

func writeError(w http.ResponseWriter, err error) {
	if e, ok := err.(*apiError); ok {
		writeJSON(w, e.status, e)
		return
	}
	writeJSON(w, http.StatusInternalServerError, &apiError{Code: "internal", Message: err.Error()})
}

// readJSON decodes a request body of at most 16 MiB (a command with all its variables).
func readJSON(r *http.Request, into any) error {
	decoder := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 16<<20))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(into); err != nil {
		return fail(http.StatusBadRequest, "invalid", "bad request body: %v", err)
	}
	return nil
}

func (a *agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 2 || parts[0] != "v1" {
		writeError(w, fail(http.StatusNotFound, "not_found", "no such route %s", r.URL.Path))
		return
	}
	var err error
	switch route := parts[1]; {
	case route == "health" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"user": a.user, "home": a.home, "pid": os.Getpid()})
	case route == "configure" && r.Method == http.MethodPost:
		err = a.configure(r)
		if err == nil {
			w.WriteHeader(http.StatusNoContent)
		}
	case route == "processes":
		err = a.routeProcesses(w, r, parts[2:])
	case route == "files":
		err = a.routeFiles(w, r, parts[2:])
	case route == "ports" && len(parts) == 3 && r.Method == http.MethodGet:
		err = tunnel(w, r, parts[2])
	case (route == "freeze" || route == "thaw") && r.Method == http.MethodPost:
		err = freeze(route == "freeze")
		if err == nil {
			w.WriteHeader(http.StatusNoContent)
		}
	default:
		err = fail(http.StatusNotFound, "not_found", "no such route %s %s", r.Method, r.URL.Path)
	}
	if err != nil {
		writeError(w, err)
	}
}

// configure sets the environment variables every later command gets (a sandbox's own `envs`).
func (a *agent) configure(r *http.Request) error {
	var body struct {
		Envs map[string]string `json:"envs"`
	}
	if err := readJSON(r, &body); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, v := range body.Envs {
		a.defaults[k] = v
	}
	return nil
}

// spareThreads is how many OS threads the agent makes at its start and keeps idle.
const spareThreads = 12

// reserveThreads makes n OS threads now, while the sandbox's pids limit allows it, and leaves
// them idle for the Go runtime to reuse. A fork bomb in the sandbox takes every pid; the runtime
// ends the whole process when it cannot start a thread it needs (a goroutine blocking in wait4
// for a command, a timer firing the kill), and the sandbox would die with its agent.
func reserveThreads(n int) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A blocking system call holds its thread: the others need threads of their own.
			pause := syscall.Timespec{Nsec: 50_000_000}
			_ = syscall.Nanosleep(&pause, nil)
		}()
	}
	wg.Wait()
}
