//go:build unix && !linux

package postfixtest

import "syscall"

// sysProcAttr puts master in its own process group, so that one kill
// reaches all of Postfix.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
