package app

import "syscall"

// childAttr makes Linux kill a role process when the test binary dies, so
// a test that times out leaves no brokers or servers behind.
var childAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
