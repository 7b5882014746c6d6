package maildir

import (
	"errors"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// openUnnamed creates a file in dir that has no name (O_TMPFILE): it
// takes a name only when linkUnnamed gives it one, and vanishes if the
// process dies first, leaving nothing behind in tmp/.
func openUnnamed(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir+"/(unnamed)"), nil
}

// linkUnnamed gives f, from openUnnamed, the name dst; an existing dst is
// an error matching os.ErrExist, never replaced. The way through /proc
// needs no privilege; AT_EMPTY_PATH, for where /proc is not mounted,
// needs CAP_DAC_READ_SEARCH.
func linkUnnamed(f *os.File, dst string) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	cerr := rc.Control(func(fd uintptr) {
		lerr = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(fd)), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
		if errors.Is(lerr, unix.ENOENT) {
			if _, serr := os.Stat("/proc/self/fd"); serr != nil {
				lerr = unix.Linkat(int(fd), "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH)
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	if lerr != nil {
		return &os.LinkError{Op: "link", Old: f.Name(), New: dst, Err: lerr}
	}
	return nil
}
