package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"
)

// Watching a directory: the kernel's inotify, read through Go's poller (so a watch waiting for
// events holds no OS thread, and ends when its reader goes away). Events are lines of JSON, names
// relative to the watched directory. A reader slower than the events lets the kernel's queue fill;
// its overflow ends the watch with an error, so nothing here grows with what the sandbox does.

// At most this many directories under one watch (a recursive watch of a tree), and this many
// watches at once in one sandbox: inotify's limits are the kernel's, per user, and shared with
// whatever else runs as that user.
const (
	maxWatchedDirs = 10000
	maxWatches     = 32
)

const watchMask = syscall.IN_CREATE | syscall.IN_MODIFY | syscall.IN_ATTRIB | syscall.IN_DELETE |
	syscall.IN_MOVED_FROM | syscall.IN_MOVED_TO | syscall.IN_DELETE_SELF | syscall.IN_MOVE_SELF |
	syscall.IN_ONLYDIR

type watchEvent struct {
	Type    string `json:"type"` // start | event | end
	Name    string `json:"name,omitempty"`
	Op      string `json:"op,omitempty"` // create | write | remove | rename | chmod
	Entry   *entry `json:"entry,omitempty"`
	Code    string `json:"code,omitempty"`  // end: removed | moved | overflow | too_many
	Message string `json:"error,omitempty"` // end: why the watch ended by itself
}

type watcher struct {
	file      *os.File
	fd        int // (not file.Fd(): that would take the file out of the poller)
	root      string
	recursive bool
	dirs      map[int32]string // watch descriptor → directory, relative to root ("" for root)
	// The cookie of an upload's temporary file renamed away (see writeFile): its rename onto its
	// name comes next.
	uploadCookie uint32
}

func (a *agent) watchDir(w http.ResponseWriter, r *http.Request, root string) error {
	a.mu.Lock()
	if a.watches >= maxWatches {
		a.mu.Unlock()
		return fail(http.StatusTooManyRequests, "too_many", "at most %d watches at once in a sandbox", maxWatches)
	}
	a.watches++
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.watches--
		a.mu.Unlock()
	}()
	query := r.URL.Query()
	recursive, withEntry := query.Get("recursive") == "1", query.Get("entry") == "1"
	info, err := os.Stat(root)
	if err != nil {
		return fsError(err, root)
	}
	if !info.IsDir() {
		return fail(http.StatusBadRequest, "invalid", "%s is not a directory", root)
	}
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return fail(http.StatusTooManyRequests, "too_many", "cannot watch: %v", err)
	}
	wt := &watcher{file: os.NewFile(uintptr(fd), "inotify"), fd: fd, root: root, recursive: recursive, dirs: map[int32]string{}}
	defer wt.file.Close()
	if err := wt.add("", nil); err != nil {
		return err
	}
	// The first line says every directory is watched: what happens after it is seen.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	encoder := json.NewEncoder(w)
	_ = encoder.Encode(watchEvent{Type: "start"})
	flusher.Flush()

	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-r.Context().Done():
			_ = wt.file.Close() // unblocks the read below
		case <-stop:
		}
	}()
	buffer := make([]byte, 64*1024)
	for {
		n, err := wt.file.Read(buffer)
		if err != nil {
			return nil // the reader went away
		}
		events, ended := wt.decode(buffer[:n], withEntry)
		for _, e := range events {
			if encoder.Encode(e) != nil {
				return nil
			}
		}
		flusher.Flush()
		if ended != nil {
			_ = encoder.Encode(ended)
			return nil
		}
	}
}

// add watches dir (relative to the root) and, for a recursive watch, every directory under it,
// telling found (when not nil) of each entry it finds there: a directory made while the watch
// runs may have entries before its own watch exists, and they are told as created (one made
// between the two is told twice). Symbolic links are not followed: a watch stays inside its tree.
func (wt *watcher) add(dir string, found func(name string)) error {
	full := filepath.Join(wt.root, dir)
	if len(wt.dirs) >= maxWatchedDirs {
		return fail(http.StatusRequestEntityTooLarge, "too_many", "more than %d directories under %s", maxWatchedDirs, wt.root)
	}
	mask := uint32(watchMask)
	if dir != "" {
		mask |= syscall.IN_DONT_FOLLOW // (the directory asked for may be a link; nothing under it is followed)
	}
	wd, err := syscall.InotifyAddWatch(wt.fd, full, mask)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return fail(http.StatusTooManyRequests, "too_many", "the sandbox's user has no inotify watches left")
		}
		return fsError(err, full)
	}
	wt.dirs[int32(wd)] = dir
	if !wt.recursive {
		return nil
	}
	items, err := os.ReadDir(full)
	if err != nil {
		return nil // gone or closed meanwhile: its own events say so
	}
	for _, item := range items {
		name := filepath.Join(dir, item.Name())
		if found != nil {
			found(name)
		}
		if item.IsDir() { // (a symbolic link to a directory is not one)
			if err := wt.add(name, found); err != nil {
				var failure *apiError
				if errors.As(err, &failure) && failure.Code == "too_many" {
					return err
				}
			}
		}
	}
	return nil
}

// decode turns what one read returned into events; ended is why the watch is over, if it is.
func (wt *watcher) decode(buffer []byte, withEntry bool) (events []watchEvent, ended *watchEvent) {
	for offset := 0; offset+syscall.SizeofInotifyEvent <= len(buffer); {
		raw := (*syscall.InotifyEvent)(unsafe.Pointer(&buffer[offset]))
		end := offset + syscall.SizeofInotifyEvent + int(raw.Len)
		if end > len(buffer) {
			break // (the kernel returns whole events; never read past what it returned)
		}
		nameBytes := buffer[offset+syscall.SizeofInotifyEvent : end]
		offset = end
		mask := raw.Mask
		if mask&syscall.IN_Q_OVERFLOW != 0 {
			return events, endOf("overflow", "changes came faster than they were read, and some were lost")
		}
		dir, known := wt.dirs[raw.Wd]
		if !known {
			continue
		}
		if mask&syscall.IN_IGNORED != 0 {
			delete(wt.dirs, raw.Wd)
			if dir == "" {
				return events, endOf("removed", "the watched directory was removed")
			}
			continue
		}
		if mask&(syscall.IN_DELETE_SELF|syscall.IN_MOVE_SELF) != 0 {
			if dir == "" && mask&syscall.IN_MOVE_SELF != 0 {
				return events, endOf("moved", "the watched directory was moved")
			}
			continue // a directory under the root: its parent's event names it
		}
		base := string(trimNul(nameBytes))
		if base == "" {
			continue // the directory's own attributes: not an entry in the tree
		}
		// An upload's temporary file is left out: the upload shows as its rename onto the name,
		// reported as a create and a write, as when uploads wrote the file in place. (Code in the
		// sandbox that names its own files so hides them from watches: a watch is no audit.)
		if isUploadTemp(base) {
			if mask&syscall.IN_MOVED_FROM != 0 {
				wt.uploadCookie = raw.Cookie
			}
			continue
		}
		uploaded := mask&syscall.IN_MOVED_TO != 0 && raw.Cookie != 0 && raw.Cookie == wt.uploadCookie
		name := filepath.Join(dir, base)
		op := ""
		var found []string
		switch {
		case mask&(syscall.IN_CREATE|syscall.IN_MOVED_TO) != 0:
			op = "create"
			if wt.recursive && mask&syscall.IN_ISDIR != 0 {
				// A new directory in the tree is watched too.
				var failure *apiError
				err := wt.add(name, func(inner string) { found = append(found, inner) })
				if errors.As(err, &failure) && failure.Code == "too_many" {
					return events, endOf("too_many", failure.Message)
				}
			}
		case mask&syscall.IN_MODIFY != 0:
			op = "write"
		case mask&syscall.IN_DELETE != 0:
			op = "remove"
		case mask&syscall.IN_MOVED_FROM != 0:
			op = "rename"
			if mask&syscall.IN_ISDIR != 0 {
				wt.forget(name) // moved out, or to a new name that its own event watches again
			}
		case mask&syscall.IN_ATTRIB != 0:
			op = "chmod"
		default:
			continue
		}
		events = append(events, wt.event(name, op, withEntry))
		if uploaded {
			events = append(events, wt.event(name, "write", withEntry))
		}
		for _, inner := range found {
			events = append(events, wt.event(inner, "create", withEntry))
		}
	}
	return events, nil
}

// forget stops watching dir and everything under it.
func (wt *watcher) forget(dir string) {
	for wd, watched := range wt.dirs {
		if watched == dir || strings.HasPrefix(watched, dir+"/") {
			_, _ = syscall.InotifyRmWatch(wt.fd, uint32(wd))
			delete(wt.dirs, wd)
		}
	}
}

func (wt *watcher) event(name, op string, withEntry bool) watchEvent {
	e := watchEvent{Type: "event", Name: name, Op: op}
	if withEntry && op != "remove" && op != "rename" {
		full := filepath.Join(wt.root, name)
		if info, err := os.Lstat(full); err == nil {
			described := describe(full, info)
			e.Entry = &described
		}
	}
	return e
}

func endOf(code, message string) *watchEvent {
	return &watchEvent{Type: "end", Code: code, Message: message}
}

func trimNul(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}
