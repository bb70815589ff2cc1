//go:build !linux

package app

import "syscall"

var childAttr *syscall.SysProcAttr
