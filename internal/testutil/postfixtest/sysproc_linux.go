package postfixtest

import "syscall"

// sysProcAttr puts master in its own process group (so that one kill
// reaches all of Postfix) and has the kernel kill it when the test binary
// dies first, for example on a -timeout panic. (Strictly, when the OS thread
// that started it exits; the Go runtime keeps its threads unless a goroutine
// exits while locked to one.) Postfix's daemons exit by themselves once
// their master is gone, apart from an smtpd still serving a client, which
// goes when the client does (TestMasterDeath).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
