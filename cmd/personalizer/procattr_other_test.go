//go:build !linux

package main

import "syscall"

var childAttr *syscall.SysProcAttr
