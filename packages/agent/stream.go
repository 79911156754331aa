package main

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// pack and unpack move a folder's contents as a tar stream (PAX: owners, modes, nanosecond times,
// symlinks, hard links, FIFOs and device nodes), where the two folders are never in one container:
// on Kubernetes a pod mounts only its own namespace's claims, so a volume reaches a snapshot (and a
// snapshot a new environment's volume) as `pack` in a pod beside one, piped by the control plane
// into `unpack` in a pod beside the other. Sockets are left out (nothing listens on a copy).

const streamBuffer = 1 << 20

// packTree writes the contents of the folder SRC to stdout.
// With --max-bytes=N it refuses, before writing anything, a folder holding more than N bytes.
func packTree(args []string) int {
	max, args := maxBytesFlag(args)
	if len(args) != 1 {
		usage()
	}
	out := bufio.NewWriterSize(os.Stdout, streamBuffer)
	p := &packer{root: filepath.Clean(args[0]), tw: tar.NewWriter(out), links: map[fileID]string{}}
	total, err := measure(p.root)
	if err == nil {
		err = withinLimit(total.content, max)
	}
	if err == nil {
		err = p.dir(".")
	}
	if err == nil {
		err = p.tw.Close()
	}
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mayfly-agent pack: %v\n", err)
		return 1
	}
	return 0
}

type packer struct {
	root  string
	tw    *tar.Writer
	links map[fileID]string
}

// dir writes the folder's own entry (the root's as ".": its owner, mode and times), then its entries.
func (p *packer) dir(name string) error {
	full := filepath.Join(p.root, name)
	info, err := os.Lstat(full)
	if err != nil {
		return err
	}
	if err := p.header(name, info, ""); err != nil {
		return err
	}
	entries, err := os.ReadDir(full)
	if err != nil {
		return err
	}
	for _, entry := range entries {
		if err := p.entry(path.Join(name, entry.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (p *packer) entry(name string) error {
	full := filepath.Join(p.root, name)
	info, err := os.Lstat(full)
	if err != nil {
		return err
	}
	st := info.Sys().(*syscall.Stat_t)
	mode := info.Mode()
	if mode&os.ModeSocket != 0 {
		return nil
	}
	if mode.IsRegular() && st.Nlink > 1 {
		id := fileID{uint64(st.Dev), st.Ino}
		if first, seen := p.links[id]; seen {
			return p.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: first, Format: tar.FormatPAX})
		}
		p.links[id] = name
	}
	switch {
	case info.IsDir():
		return p.dir(name)
	case mode&os.ModeSymlink != 0:
		target, err := os.Readlink(full)
		if err != nil {
			return err
		}
		return p.header(name, info, target)
	case mode.IsRegular():
		return p.file(name, full, info)
	default:
		return p.header(name, info, "")
	}
}

// file writes a regular file's header and exactly the bytes it had when looked at: opened without
// following a link, and refused if what was opened is no longer that file.
func (p *packer) file(name, full string, info os.FileInfo) error {
	f, err := os.OpenFile(full, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	now, err := f.Stat()
	if err != nil {
		return err
	}
	if !os.SameFile(info, now) || !now.Mode().IsRegular() {
		return fmt.Errorf("%s changed while it was read", name)
	}
	if err := p.header(name, now, ""); err != nil {
		return err
	}
	if _, err := io.CopyN(p.tw, f, now.Size()); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (p *packer) header(name string, info os.FileInfo, link string) error {
	h, err := tar.FileInfoHeader(info, link)
	if err != nil {
		return err
	}
	st := info.Sys().(*syscall.Stat_t)
	h.Name, h.Uname, h.Gname = name, "", ""
	h.Uid, h.Gid = int(st.Uid), int(st.Gid)
	h.ModTime = time.Unix(st.Mtim.Unix())
	h.AccessTime = time.Unix(st.Atim.Unix())
	h.ChangeTime = time.Time{}
	h.Format = tar.FormatPAX
	if info.IsDir() && name != "." {
		h.Name += "/"
	}
	return p.tw.WriteHeader(h)
}

// unpackTree reads a stream `pack` wrote from stdin into the folder DST, emptied first (a copy cut
// short left half of one), and prints what it wrote as one JSON line.
//
// The stream is not trusted: it is the contents of a volume that code nobody vetted wrote. Every
// name must be relative and without `..`, and its folder one this unpack made (never a symlink
// the stream made, never something that was there); each entry is created anew (O_EXCL: nothing
// existing is opened or followed); a hard link may only name a regular file made before it.
//
// With --max-bytes=N it stops at a stream holding more than N bytes of files; it always stops
// before a file the disk has no room for, and as the disk fills (see budget.go).
func unpackTree(args []string) int {
	max, args := maxBytesFlag(args)
	if len(args) != 1 {
		usage()
	}
	root := filepath.Clean(args[0])
	u := &unpacker{root: root, dirs: map[string]bool{}, files: map[string]bool{}, max: max, room: pacer{dir: root}}
	err := u.empty()
	if err == nil {
		err = u.read(tar.NewReader(bufio.NewReaderSize(os.Stdin, streamBuffer)))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mayfly-agent unpack: %v\n", err)
		return 1
	}
	out, _ := json.Marshal(u.stats)
	fmt.Println(string(out))
	return 0
}

type unpacker struct {
	root  string
	stats copyStats
	// Folders made by this unpack (and "." for the root): the only ones anything is put in.
	dirs map[string]bool
	// Regular files made by this unpack: the only ones a hard link may name.
	files map[string]bool
	// Folders' owners, modes and times, given once what is in them is written (last first).
	later []*tar.Header
	// The most bytes of file content this unpack may write (0: no limit).
	max int64
	// The room left on the disk written to, looked at again as the stream is written.
	room pacer
}

func (u *unpacker) empty() error {
	entries, err := os.ReadDir(u.root)
	if err != nil {
		return err
	}
	for _, entry := range entries {
		// RemoveAll removes a symlink itself, never what it names.
		if err := os.RemoveAll(filepath.Join(u.root, entry.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (u *unpacker) read(tr *tar.Reader) error {
	u.dirs["."] = true
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := u.entry(h, tr); err != nil {
			return fmt.Errorf("%q: %w", h.Name, err)
		}
	}
	for i := len(u.later) - 1; i >= 0; i-- {
		h := u.later[i]
		if err := u.attributes(filepath.Join(u.root, path.Clean(h.Name)), h); err != nil {
			return err
		}
	}
	return nil
}

// clean is the stream's name as a path under the root, or an error when it could lead elsewhere.
func clean(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) || strings.HasPrefix(name, "/") {
		return "", errors.New("not a relative name")
	}
	for _, part := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if part == ".." {
			return "", errors.New("a name with .. in it")
		}
	}
	return path.Clean(name), nil
}

func (u *unpacker) entry(h *tar.Header, body io.Reader) error {
	name, err := clean(h.Name)
	if err != nil {
		return err
	}
	if name == "." {
		if h.Typeflag != tar.TypeDir {
			return errors.New("the root must be a folder")
		}
		u.later = append(u.later, h)
		return nil
	}
	if !u.dirs[path.Dir(name)] {
		return errors.New("its folder is not one this stream made")
	}
	full := filepath.Join(u.root, name)
	entryBytes := onDisk(h.FileInfo().Mode(), int64(len(h.Linkname)))
	if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeLink {
		entryBytes = 0 // a file's content is looked at as it is written; a hard link takes no block
	}
	if err := u.room.next(entryBytes, 1); err != nil {
		return err
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(full, 0o700); err != nil {
			return err
		}
		u.dirs[name] = true
		u.later = append(u.later, h)
		return nil
	case tar.TypeReg:
		return u.file(name, full, h, body)
	case tar.TypeSymlink:
		if err := os.Symlink(h.Linkname, full); err != nil {
			return err
		}
		return os.Lchown(full, h.Uid, h.Gid)
	case tar.TypeLink:
		target, err := clean(h.Linkname)
		if err != nil || !u.files[target] {
			return errors.New("a hard link to something that is not a file of this stream")
		}
		return os.Link(filepath.Join(u.root, target), full)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: syscall.S_IFCHR, tar.TypeBlock: syscall.S_IFBLK, tar.TypeFifo: syscall.S_IFIFO}[h.Typeflag]
		dev := int((h.Devmajor&0xfff)<<8 | h.Devminor&0xff | (h.Devminor&^0xff)<<12)
		if err := syscall.Mknod(full, kind|0o600, dev); err != nil {
			return err
		}
		return u.attributes(full, h)
	}
	return fmt.Errorf("an entry of type %q, which a volume's copy never has", h.Typeflag)
}

func (u *unpacker) file(name, full string, h *tar.Header, body io.Reader) error {
	if h.Size < 0 || h.Size > math.MaxInt64-u.stats.Bytes {
		return errors.New("a file size no volume holds")
	}
	if err := withinLimit(u.stats.Bytes+h.Size, u.max); err != nil {
		return err
	}
	// The stream names sizes before it holds them: one the disk has no room for is refused at once.
	whole := diskUse{}
	whole.add(os.ModePerm, h.Size) // a regular file's mode
	if err := roomFor(u.root, whole); err != nil {
		return err
	}
	out, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	n, err := u.room.copyPaced(out, body, h.Size)
	if err != nil {
		return err
	}
	u.files[name] = true
	u.stats.Files++
	u.stats.Bytes += n
	if err := out.Chown(h.Uid, h.Gid); err != nil {
		return err
	}
	// After chown, which clears set-user-ID and set-group-ID bits.
	if err := out.Chmod(h.FileInfo().Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)); err != nil {
		return err
	}
	times := [2]syscall.Timespec{syscall.NsecToTimespec(h.AccessTime.UnixNano()), syscall.NsecToTimespec(h.ModTime.UnixNano())}
	if h.AccessTime.IsZero() {
		times[0] = times[1]
	}
	if _, _, errno := syscall.Syscall6(syscall.SYS_UTIMENSAT, out.Fd(), 0, uintptr(unsafe.Pointer(&times[0])), 0, 0, 0); errno != 0 {
		return errno
	}
	return out.Close()
}

// attributes gives a folder or node this unpack made the stream's owner, mode and times.
func (u *unpacker) attributes(full string, h *tar.Header) error {
	if err := os.Lchown(full, h.Uid, h.Gid); err != nil {
		return err
	}
	if err := os.Chmod(full, h.FileInfo().Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
		return err
	}
	atime := h.AccessTime
	if atime.IsZero() {
		atime = h.ModTime
	}
	return syscall.UtimesNano(full, []syscall.Timespec{syscall.NsecToTimespec(atime.UnixNano()), syscall.NsecToTimespec(h.ModTime.UnixNano())})
}
