package popa3dtest

import "syscall"

// sysProcAttr puts the child in a new mount namespace; Go then makes "/"
// private (MS_REC|MS_PRIVATE), so the bind mounts stay in it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
}
