package maildir

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's data to disk now,
// without waiting for it. By the time Flush fsyncs the batch, most of it
// is written, and the fsyncs are left with the journal commit. Only a
// hint: an error here changes nothing, the fsync still decides.
func startWriteback(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	})
}
