package main

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Everything here runs as the sandbox's user, inside the sandbox: the kernel decides what may be
// read or written, and `..` or a symlink can only lead somewhere else in the same sandbox.

type entry struct {
	Name          string `json:"name"`
	Path          string `json:"path"`
	Type          string `json:"type"` // file | dir | symlink | other
	Size          int64  `json:"size"`
	Mode          string `json:"mode"`
	ModifiedAt    string `json:"modifiedAt"`
	SymlinkTarget string `json:"symlinkTarget,omitempty"`
}

func describe(path string, info fs.FileInfo) entry {
	e := entry{
		Name:       info.Name(),
		Path:       path,
		Size:       info.Size(),
		Mode:       strconv.FormatUint(uint64(info.Mode().Perm()), 8),
		ModifiedAt: info.ModTime().UTC().Format(time.RFC3339Nano),
	}
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		e.Type = "symlink"
		e.SymlinkTarget, _ = os.Readlink(path)
	case info.IsDir():
		e.Type = "dir"
	case info.Mode().IsRegular():
		e.Type = "file"
	default:
		e.Type = "other"
	}
	return e
}

func (a *agent) resolve(r *http.Request) (string, error) {
	path := r.URL.Query().Get("path")
	if path == "" {
		return "", fail(http.StatusBadRequest, "invalid", "path is required")
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(a.home, path)
	}
	return filepath.Clean(path), nil
}

func fsError(err error, path string) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail(http.StatusNotFound, "not_found", "%s does not exist", path)
	case errors.Is(err, fs.ErrPermission):
		return fail(http.StatusForbidden, "forbidden", "permission denied: %s", path)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fail(http.StatusInsufficientStorage, "no_space", "no space left for %s", path)
	case errors.Is(err, syscall.EISDIR):
		return fail(http.StatusBadRequest, "invalid", "%s is a directory", path)
	case errors.Is(err, syscall.ENOTDIR):
		return fail(http.StatusBadRequest, "invalid", "a parent of %s is not a directory", path)
	case errors.Is(err, syscall.EROFS):
		return fail(http.StatusForbidden, "forbidden", "%s is on a read-only file system", path)
	}
	return err
}

func (a *agent) routeFiles(w http.ResponseWriter, r *http.Request, rest []string) error {
	path, err := a.resolve(r)
	if err != nil {
		return err
	}
	action := ""
	if len(rest) > 0 {
		action = rest[0]
	}
	switch {
	case action == "" && r.Method == http.MethodGet:
		return readFile(w, path)
	case action == "" && r.Method == http.MethodPut:
		return writeFile(w, r, path)
	case action == "" && r.Method == http.MethodDelete:
		if _, err := os.Lstat(path); err != nil {
			return fsError(err, path)
		}
		if err := os.RemoveAll(path); err != nil {
			return fsError(err, path)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	case action == "stat" && r.Method == http.MethodGet:
		info, err := os.Lstat(path)
		if err != nil {
			return fsError(err, path)
		}
		writeJSON(w, http.StatusOK, describe(path, info))
		return nil
	case action == "list" && r.Method == http.MethodGet:
		return list(w, r, path)
	case action == "watch" && r.Method == http.MethodGet:
		return a.watchDir(w, r, path)
	case action == "mkdir" && r.Method == http.MethodPost:
		_, statErr := os.Stat(path)
		if err := os.MkdirAll(path, 0o755); err != nil {
			return fsError(err, path)
		}
		writeJSON(w, http.StatusOK, map[string]bool{"created": statErr != nil})
		return nil
	case action == "rename" && r.Method == http.MethodPost:
		to := r.URL.Query().Get("to")
		if to == "" {
			return fail(http.StatusBadRequest, "invalid", "to is required")
		}
		if !filepath.IsAbs(to) {
			to = filepath.Join(a.home, to)
		}
		if err := os.Rename(path, to); err != nil {
			return fsError(err, path)
		}
		info, err := os.Lstat(to)
		if err != nil {
			return fsError(err, to)
		}
		writeJSON(w, http.StatusOK, describe(to, info))
		return nil
	}
	return fail(http.StatusNotFound, "not_found", "no such route %s %s", r.Method, r.URL.Path)
}

func readFile(w http.ResponseWriter, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fsError(err, path)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fsError(err, path)
	}
	if info.IsDir() {
		return fail(http.StatusBadRequest, "invalid", "%s is a directory", path)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if info.Mode().IsRegular() {
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size(), 10))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
	return nil
}

func writeFile(w http.ResponseWriter, r *http.Request, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fsError(err, path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fsError(err, path)
	}
	_, copyErr := io.Copy(f, r.Body)
	closeErr := f.Close()
	if copyErr != nil {
		return fsError(copyErr, path)
	}
	if closeErr != nil {
		return fsError(closeErr, path)
	}
	info, err := os.Lstat(path)
	if err != nil {
		return fsError(err, path)
	}
	writeJSON(w, http.StatusOK, describe(path, info))
	return nil
}

// At most this many entries in one listing.
const maxListEntries = 10000

func list(w http.ResponseWriter, r *http.Request, path string) error {
	depth := 1
	if d := r.URL.Query().Get("depth"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 || n > 32 {
			return fail(http.StatusBadRequest, "invalid", "depth must be 1 to 32")
		}
		depth = n
	}
	info, err := os.Stat(path)
	if err != nil {
		return fsError(err, path)
	}
	if !info.IsDir() {
		return fail(http.StatusBadRequest, "invalid", "%s is not a directory", path)
	}
	entries := []entry{}
	var walk func(dir string, level int) error
	walk = func(dir string, level int) error {
		items, err := os.ReadDir(dir)
		if err != nil {
			return fsError(err, dir)
		}
		for _, item := range items {
			if len(entries) >= maxListEntries {
				return fail(http.StatusRequestEntityTooLarge, "too_many", "more than %d entries under %s", maxListEntries, path)
			}
			child := filepath.Join(dir, item.Name())
			info, err := item.Info()
			if err != nil {
				continue // gone meanwhile
			}
			entries = append(entries, describe(child, info))
			if item.IsDir() && level < depth {
				if err := walk(child, level+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(path, 1); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]any{"entries": entries})
}
