package main

import (
	"fmt"
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

// measure is the apparent size of the regular files under root (a file with several names counted
// once; holes counted, as a copy may fill them), looked at without following any link.
func measure(root string) (int64, error) {
	var total int64
	seen := map[fileID]bool{}
	err := filepath.WalkDir(root, func(path string, entry os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !entry.Type().IsRegular() {
			return nil
		}
		info, err := entry.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if st.Nlink > 1 {
			id := fileID{uint64(st.Dev), st.Ino}
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		// Saturated, never wrapped: a seed can make enough terabyte-sized sparse files to overflow
		// the sum, which would then pass every check below as a negative size.
		if info.Size() > math.MaxInt64-total {
			total = math.MaxInt64
			return nil
		}
		total += info.Size()
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

// roomFor refuses writing need more bytes into dir's file system unless it keeps, after them, what
// unprivileged users may not use (ext4's reserve) and 1% of its size besides.
func roomFor(dir string, need int64) error {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return err
	}
	avail := int64(fs.Bavail) * fs.Bsize
	reserve := int64(fs.Blocks) * fs.Bsize / 100
	if need > avail-reserve {
		free := avail - reserve
		if free < 0 {
			free = 0
		}
		return &noRoomError{need: need, free: free}
	}
	return nil
}

type noRoomError struct{ need, free int64 }

func (e *noRoomError) Error() string {
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
