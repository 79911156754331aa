package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A volume's contents are written by code nobody vetted: a seed can leave a terabyte-sized sparse
// file, or simply fill what it is given. Every copy (copy, pack, unpack) is therefore bounded: by
// --max-bytes when given (the snapshot budget), and always by the room left on the disk written
// to, which keeps a reserve so that the host's own writes (the Engine, the control plane's store)
// never find it full.

// maxBytesFlag takes a leading --max-bytes=N off args: the most a copy may write (0: no limit).
func maxBytesFlag(args []string) (int64, []string) {
	if len(args) == 0 || !strings.HasPrefix(args[0], "--max-bytes=") {
		return 0, args
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(args[0], "--max-bytes="), 10, 64)
	if err != nil || n < 0 {
		usage()
	}
	return n, args[1:]
}

// blockSize is the least one entry takes on the disk written to (a block of ext4 or XFS): an empty
// folder, a long symlink and a one-byte file each take one.
const blockSize = 4096

// inlineSymlink is the longest symlink target ext4 keeps in the inode itself (no block).
const inlineSymlink = 59

// diskUse is what a copy writes: its files' content (what a snapshot holds, holes counted as a
// copy may fill them), bytes on disk (besides, a block for every folder and long symlink, files
// rounded up to whole blocks) and entries (one inode each).
type diskUse struct{ content, bytes, entries int64 }

// add counts one more entry, of this kind and size (a symlink's: its target's length).
func (u *diskUse) add(mode os.FileMode, size int64) {
	u.entries++
	if mode.IsRegular() {
		u.content = saturatingAdd(u.content, size)
	}
	blocks := onDisk(mode, size)
	if blocks <= math.MaxInt64-blockSize+1 {
		blocks = (blocks + blockSize - 1) / blockSize * blockSize
	}
	u.bytes = saturatingAdd(u.bytes, blocks)
}

// saturatingAdd never wraps: a seed can make enough terabyte-sized sparse files to overflow a sum,
// which would then pass every check as a negative size.
func saturatingAdd(a, b int64) int64 {
	if b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

// onDisk is what an entry of this kind and size (a symlink's: its target's length) takes.
func onDisk(mode os.FileMode, size int64) int64 {
	switch {
	case mode.IsRegular():
		return size
	case mode.IsDir():
		return blockSize
	case mode&os.ModeSymlink != 0 && size > inlineSymlink:
		return size
	}
	return 0
}

// measure is what copying the entries under root writes (see diskUse; a file with several names
// counted once), looked at without following any link.
func measure(root string) (diskUse, error) {
	var total diskUse
	seen := map[fileID]bool{}
	err := filepath.WalkDir(root, func(path string, entry os.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		info, err := entry.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if !info.IsDir() && st.Nlink > 1 {
			id := fileID{uint64(st.Dev), st.Ino}
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		total.add(info.Mode(), info.Size())
		return nil
	})
	return total, err
}

// withinLimit refuses a copy of total bytes past max (when there is one).
func withinLimit(total, max int64) error {
	if max > 0 && total > max {
		return fmt.Errorf("the volume holds %s, over the %s a snapshot may hold", humanBytes(total), humanBytes(max))
	}
	return nil
}

// roomFor refuses writing need into dir's file system unless it keeps, after it, what unprivileged
// users may not use (ext4's reserve) and 1% of its size besides, of blocks and of inodes alike
// (a file system that does not count inodes, as btrfs, is judged by its blocks).
func roomFor(dir string, need diskUse) error {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return err
	}
	avail := int64(fs.Bavail) * fs.Bsize
	reserve := int64(fs.Blocks) * fs.Bsize / 100
	if need.bytes > avail-reserve {
		return &noRoomError{need: need.bytes, free: atLeastZero(avail - reserve)}
	}
	// Some file systems (FUSE ones) say "no limit" as the largest count, which int64 would read as -1.
	if fs.Files > 0 && fs.Files <= math.MaxInt64 && fs.Ffree <= math.MaxInt64 {
		spare := int64(fs.Ffree) - int64(fs.Files)/100
		if need.entries > spare {
			return &noRoomError{need: need.entries, free: atLeastZero(spare), inodes: true}
		}
	}
	return nil
}

// Look again at the room left every this many bytes or entries written: copies running beside each
// other (restores into several environments at once) each passed the look before they began.
const (
	checkEveryBytes   = 64 << 20
	checkEveryEntries = 4096
)

// pacer is a copy's running look at the room left on the disk it writes to.
type pacer struct {
	dir     string
	pending diskUse
}

// next is called before writing bytes (at most checkEveryBytes) as part of entries new entries.
func (p *pacer) next(bytes, entries int64) error {
	p.pending.bytes += bytes
	p.pending.entries += entries
	if p.pending.bytes < checkEveryBytes && p.pending.entries < checkEveryEntries {
		return nil
	}
	need := p.pending
	p.pending = diskUse{}
	return roomFor(p.dir, need)
}

// copyPaced copies size bytes from in to out (kernel to kernel where both are files), looking at
// the room left before every stretch of checkEveryBytes.
func (p *pacer) copyPaced(out io.Writer, in io.Reader, size int64) (int64, error) {
	var written int64
	for written < size {
		n := size - written
		if n > checkEveryBytes {
			n = checkEveryBytes
		}
		if err := p.next(n, 0); err != nil {
			return written, err
		}
		copied, err := io.CopyN(out, in, n)
		written += copied
		if errors.Is(err, io.EOF) {
			return written, nil // a file that shrank since it was measured: copied as it is now
		}
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func atLeastZero(n int64) int64 {
	if n < 0 {
		return 0
	}
	return n
}

type noRoomError struct {
	need, free int64
	inodes     bool
}

func (e *noRoomError) Error() string {
	if e.inodes {
		return fmt.Sprintf("the copy makes %d files and folders but the disk it goes to has room for %d more", e.need, e.free)
	}
	return fmt.Sprintf("the copy needs %s but the disk it goes to has %s to spare", humanBytes(e.need), humanBytes(e.free))
}

func humanBytes(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"}
	value, unit := float64(n), 0
	for value >= 1024 && unit < len(units)-1 {
		value /= 1024
		unit++
	}
	if unit == 0 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%.1f %s", value, units[unit])
}
