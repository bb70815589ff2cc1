// Package web holds the dashboard's static files (web/static: plain
// JavaScript, CSS and the vendored uPlot charting library, no build step)
// embedded in the binary. It serves nothing itself: internal/app serves
// [Static] at / on every process that serves the REST API.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var files embed.FS

// Static is the dashboard's files, index.html at its root.
var Static, _ = fs.Sub(files, "static")
