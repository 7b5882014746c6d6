//go:build unix && !linux

package popa3dtest

import "syscall"

// sysProcAttr is never used off Linux: Start skips there (no mount
// namespaces).
func sysProcAttr() *syscall.SysProcAttr { return nil }
