package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"unsafe"
)

// FICLONE (linux/fs.h): makes DST share SRC's blocks (a reflink) on XFS, btrfs and the like.
const ficlone = 0x40049409

// copyStats is what copy prints on success, as one JSON line.
type copyStats struct {
	Bytes     int64 `json:"bytes"`
	Files     int64 `json:"files"`
	Reflinked int64 `json:"reflinked"`
}

// copyTree copies the contents of the folder SRC into the folder DST (which must exist), keeping
// modes, owners, times, symlinks (never followed), hard links, FIFOs and device nodes. Each
// regular file is first cloned (a reflink: no data copied) and copied by the kernel
// (copy_file_range) where the file system cannot clone. It is how Mayfly snapshots and restores
// volumes: run in a helper container holding nothing but the two volumes, so whatever the data
// holds (links to /etc, names with newlines) reaches nothing outside them.
//
// With --max-bytes=N it refuses a volume holding more than N bytes; it always refuses one the
// disk written to has no room for (see budget.go), before writing anything.
func copyTree(args []string) int {
	max, args := maxBytesFlag(args)
	if len(args) != 2 {
		usage()
	}
	src, dst := filepath.Clean(args[0]), filepath.Clean(args[1])
	c := &copier{links: map[fileID]string{}, cloneWorks: true, max: max, room: pacer{dir: dst}}
	err := c.check(src, dst)
	if err == nil {
		err = c.dir(src, dst)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mayfly-agent copy: %v\n", err)
		return 1
	}
	out, _ := json.Marshal(c.stats)
	fmt.Println(string(out))
	return 0
}

type fileID struct{ dev, ino uint64 }

type copier struct {
	stats copyStats
	// Files with more than one link, by inode: the second name becomes a hard link again.
	links map[fileID]string
	// Cleared at the first refusal: the file system does not clone, so no file is tried again.
	cloneWorks bool
	// The most bytes this copy may write (0: no limit).
	max int64
	// The room left on the disk written to, looked at again as the copy goes.
	room pacer
}

// check refuses, before anything is written, a copy over the limit or with no room for it.
func (c *copier) check(src, dst string) error {
	total, err := measure(src)
	if err != nil {
		return err
	}
	if err := withinLimit(total.content, c.max); err != nil {
		return err
	}
	return roomFor(dst, total)
}

// dir copies the entries of src into dst, then gives dst src's mode, owner and times.
func (c *copier) dir(src, dst string) error {
	info, err := os.Lstat(src)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, entry := range entries {
		if err := c.entry(filepath.Join(src, entry.Name()), filepath.Join(dst, entry.Name())); err != nil {
			return err
		}
	}
	return c.attributes(dst, info)
}

func (c *copier) entry(src, dst string) error {
	info, err := os.Lstat(src)
	if err != nil {
		return err
	}
	st := info.Sys().(*syscall.Stat_t)
	if !info.IsDir() && st.Nlink > 1 {
		id := fileID{uint64(st.Dev), st.Ino}
		if first, seen := c.links[id]; seen {
			return os.Link(first, dst)
		}
		c.links[id] = dst
	}
	mode := info.Mode()
	entryBytes := onDisk(mode, info.Size())
	if mode.IsRegular() {
		entryBytes = 0 // its content is looked at as it is copied
	}
	if err := c.room.next(entryBytes, 1); err != nil {
		return err
	}
	switch {
	case info.IsDir():
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		return c.dir(src, dst)
	case mode&os.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
		return os.Lchown(dst, int(st.Uid), int(st.Gid))
	case mode.IsRegular():
		// Its attributes are set through the open file, not looked up again by name.
		return c.file(src, dst, info)
	default: // FIFO, socket, device: made anew, as cp -a makes them
		if err := syscall.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return err
		}
	}
	return c.attributes(dst, info)
}

func (c *copier) file(src, dst string, info os.FileInfo) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	size := info.Size()
	c.stats.Files++
	c.stats.Bytes = saturatingAdd(c.stats.Bytes, size)
	// Measured before the copy: a file that grew since is copied as it was, within the limit.
	if err := withinLimit(c.stats.Bytes, c.max); err != nil {
		return err
	}
	cloned := false
	if c.cloneWorks && size > 0 {
		_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, out.Fd(), ficlone, in.Fd())
		if errno == 0 {
			c.stats.Reflinked++
			cloned = true
		} else if errors.Is(errno, syscall.EOPNOTSUPP) || errors.Is(errno, syscall.ENOTTY) ||
			errors.Is(errno, syscall.EXDEV) || errors.Is(errno, syscall.EINVAL) {
			c.cloneWorks = false
		}
	}
	// *os.File to *os.File: the kernel copies (copy_file_range), never through this process.
	if !cloned {
		if _, err := c.room.copyPaced(out, in, size); err != nil {
			return err
		}
	}
	st := info.Sys().(*syscall.Stat_t)
	if err := out.Chown(int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	// After chown, which clears set-user-ID and set-group-ID bits.
	if err := out.Chmod(info.Mode().Perm() | info.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
		return err
	}
	// futimens: utimensat on the descriptor itself (no path).
	times := [2]syscall.Timespec{st.Atim, st.Mtim}
	if _, _, errno := syscall.Syscall6(syscall.SYS_UTIMENSAT, out.Fd(), 0, uintptr(unsafe.Pointer(&times[0])), 0, 0, 0); errno != 0 {
		return errno
	}
	return out.Close()
}

// attributes gives path the owner, mode and times of info (a symlink keeps its own).
func (c *copier) attributes(path string, info os.FileInfo) error {
	st := info.Sys().(*syscall.Stat_t)
	if err := os.Lchown(path, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	// After chown, which clears set-user-ID and set-group-ID bits.
	if err := os.Chmod(path, info.Mode().Perm()|info.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
		return err
	}
	times := []syscall.Timespec{st.Atim, st.Mtim}
	return syscall.UtimesNano(path, times)
}
