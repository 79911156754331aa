package main

import (
	"net/http"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// Terminals: a command may run in a pseudo-terminal of its own (a new session with the terminal
// as its controlling one), as an interactive shell wants. Its output — stdout and stderr
// together, as a terminal shows them — is read from the terminal's master side; input goes there.

type terminalSize struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

func (s *terminalSize) check() error {
	if s.Cols < 1 || s.Cols > 1000 || s.Rows < 1 || s.Rows > 1000 {
		return fail(http.StatusBadRequest, "invalid", "a terminal is 1 to 1000 columns and rows")
	}
	return nil
}

// openTerminal makes a pseudo-terminal of this size: its master side (read through Go's poller)
// and the side the command gets.
func openTerminal(size terminalSize) (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fail(http.StatusBadRequest, "start_failed", "this sandbox has no terminals: %v", err)
	}
	var number uint32
	err = control(master, func(fd uintptr) error {
		unlock := int32(0)
		if err := ioctl(fd, syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); err != nil {
			return err
		}
		return ioctl(fd, syscall.TIOCGPTN, uintptr(unsafe.Pointer(&number)))
	})
	if err == nil {
		err = resizeTerminal(master, size)
	}
	if err == nil {
		slave, err = os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(number), 10), os.O_RDWR|syscall.O_NOCTTY, 0)
	}
	if err != nil {
		master.Close()
		return nil, nil, fail(http.StatusBadRequest, "start_failed", "cannot make a terminal: %v", err)
	}
	return master, slave, nil
}

// resizeTerminal sets the terminal's size; the kernel tells its foreground processes (SIGWINCH).
func resizeTerminal(master *os.File, size terminalSize) error {
	window := struct{ rows, cols, x, y uint16 }{size.Rows, size.Cols, 0, 0}
	return control(master, func(fd uintptr) error {
		return ioctl(fd, syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&window)))
	})
}

// control runs f on the file's descriptor without taking it out of Go's poller (as Fd() would).
func control(f *os.File, fn func(fd uintptr) error) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var inner error
	if err := raw.Control(func(fd uintptr) { inner = fn(fd) }); err != nil {
		return err
	}
	return inner
}

func ioctl(fd, request, arg uintptr) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, request, arg); errno != 0 {
		return errno
	}
	return nil
}

// resize is POST /v1/processes/{pid}/resize {cols, rows}.
func (p *process) resize(w http.ResponseWriter, r *http.Request) error {
	if p.terminal == nil {
		return fail(http.StatusBadRequest, "invalid", "process %d has no terminal", p.Pid)
	}
	var size terminalSize
	if err := readJSON(r, &size); err != nil {
		return err
	}
	if err := size.check(); err != nil {
		return err
	}
	if err := resizeTerminal(p.terminal, size); err != nil {
		return fail(http.StatusConflict, "ended", "the terminal of process %d is closed", p.Pid)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
