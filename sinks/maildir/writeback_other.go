//go:build !linux

package maildir

import "os"

// startWriteback is a no-op where the kernel offers no sync_file_range:
// Flush's fsync does all the work.
func startWriteback(*os.File) {}
