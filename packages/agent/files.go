package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// uploadPrefix and 16 hex digits name an upload's temporary file (watch.go leaves them out).
const uploadPrefix = ".mayfly-upload-"

// O_PATH and W_OK, which Go 1.19's syscall package does not name (the same on amd64 and arm64).
const (
	oPath = 0x200000
	wOK   = 2
)

// writeFile writes the request's body to path, its folders made. The body goes to a new file
// beside the target, renamed over it only once the whole body has arrived: an upload cut off or
// failed (its client gone, the disk full) leaves the file as it was, and the new file is removed.
// Replacing a file so needs room for both until the rename.
//
// Once the folder is made it is opened, and everything else names entries in that very folder:
// what is at the path, the temporary file, the rename and the clean-up. Something the sandbox
// swaps in meanwhile (a link for the folder) cannot move any of them elsewhere. Links in the
// folders above are followed, as before: the kernel resolves them, within the same sandbox.
//
// A link at the path itself is replaced by the file, not followed (rename never follows its
// target). Following it would mean resolving it here, between a check and a use that code in
// the sandbox can race, and without the kernel's own guards (protected_symlinks in /tmp); so the
// upload lands at the path it names, whatever was put there.
//
// A file replaced keeps its mode and its owner (not its other hard links, extended attributes or
// ACLs: it is a new file); one the sandbox's user may not write is refused as before. Where the
// file cannot be replaced that way (a folder the user cannot write, an owner it cannot give the
// new file), it is written in place as before, and so are a device or a pipe (nothing to keep,
// and a rename would replace the node itself).
func writeFile(w http.ResponseWriter, r *http.Request, path string) error {
	if path == "/" {
		return fail(http.StatusBadRequest, "invalid", "%s is a directory", path)
	}
	parent, name := filepath.Dir(path), filepath.Base(path)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fsError(err, path)
	}
	dir, err := syscall.Open(parent, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fsError(err, path)
	}
	defer syscall.Close(dir)
	old, err := statAt(dir, name)
	if err != nil {
		return fsError(err, path)
	}
	inPlace := false
	switch {
	case old == nil || old.Mode&syscall.S_IFMT == syscall.S_IFLNK:
		err = replace(dir, name, path, nil, r.Body)
	case old.Mode&syscall.S_IFMT == syscall.S_IFDIR:
		return fail(http.StatusBadRequest, "invalid", "%s is a directory", path)
	case old.Mode&syscall.S_IFMT == syscall.S_IFREG:
		if err := syscall.Faccessat(dir, name, wOK, 0); err != nil {
			return fsError(err, path)
		}
		err = replace(dir, name, path, old, r.Body)
		inPlace = err == errInPlace
	default:
		inPlace = true
	}
	if inPlace {
		err = writeInPlace(dir, name, path, r.Body)
	}
	if err != nil {
		return err
	}
	info, err := os.Lstat(path)
	if err != nil {
		return fsError(err, path)
	}
	writeJSON(w, http.StatusOK, describe(path, info))
	return nil
}

// statAt describes the entry name in dir itself (a link is not followed), or nil if there is none.
func statAt(dir int, name string) (*syscall.Stat_t, error) {
	fd, err := syscall.Openat(dir, name, oPath|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err == syscall.ENOENT {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// errInPlace says the file cannot be replaced keeping what it was: it is to be written in place.
var errInPlace = errors.New("write in place")

// replace writes body to a new file in dir and renames it over name once all of it has arrived.
// The new file is made exclusively under a name nobody can guess (nothing already there, not even
// a link, is opened); it is a new file's mode (0644 less the umask) and owner, or old's.
func replace(dir int, name, path string, old *syscall.Stat_t, body io.Reader) error {
	mode := uint32(0o644)
	if old != nil {
		mode = 0o600 // until it is old's
	}
	fd, temp, err := createTemp(dir, mode)
	if err != nil {
		if old != nil && (errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)) {
			return errInPlace
		}
		return fsError(err, path)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(filepath.Dir(path), temp))
	err = keep(fd, old)
	if err == nil {
		_, err = io.Copy(f, body)
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = syscall.Renameat(dir, temp, dir, name)
	}
	if err != nil {
		_ = syscall.Unlinkat(dir, temp)
		if err == errInPlace {
			return err
		}
		return fsError(err, path)
	}
	return nil
}

// keep gives the new file old's owner and mode (its permission bits: writing would have cleared
// set-user-ID and set-group-ID). An owner the sandbox's user cannot give it is errInPlace.
func keep(fd int, old *syscall.Stat_t) error {
	if old == nil {
		return nil
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Uid != old.Uid || st.Gid != old.Gid {
		if err := syscall.Fchown(fd, int(old.Uid), int(old.Gid)); err != nil {
			if errors.Is(err, fs.ErrPermission) {
				return errInPlace
			}
			return err
		}
	}
	return syscall.Fchmod(fd, old.Mode&0o777)
}

// createTemp makes a new file in dir named uploadPrefix and 16 random hex digits, exclusively.
func createTemp(dir int, mode uint32) (fd int, name string, err error) {
	for try := 0; try < 4; try++ { // (a name taken: one chance in 2^64)
		var random [8]byte
		if _, err := rand.Read(random[:]); err != nil {
			return -1, "", err
		}
		name = uploadPrefix + hex.EncodeToString(random[:])
		fd, err = syscall.Openat(dir, name, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, mode)
		if err != syscall.EEXIST {
			return fd, name, err
		}
	}
	return -1, "", err
}

// isUploadTemp says whether name is one createTemp makes.
func isUploadTemp(name string) bool {
	if len(name) != len(uploadPrefix)+16 || !strings.HasPrefix(name, uploadPrefix) {
		return false
	}
	for _, c := range name[len(uploadPrefix):] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// writeInPlace truncates name in dir and writes body into it, as uploads always did; a link put
// there meanwhile is refused, not followed.
func writeInPlace(dir int, name, path string, body io.Reader) error {
	fd, err := syscall.Openat(dir, name, syscall.O_WRONLY|syscall.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fsError(err, path)
	}
	f := os.NewFile(uintptr(fd), path)
	_, copyErr := io.Copy(f, body)
	closeErr := f.Close()
	if copyErr != nil {
		return fsError(copyErr, path)
	}
	if closeErr != nil {
		return fsError(closeErr, path)
	}
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
