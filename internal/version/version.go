// Package version is the build's identity: the version and commit that
// `make build` and `make package` write in with -ldflags -X, so that
// `amexd -version`, `amexctl status`, /metrics and an upgrade's message
// name the build that runs.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version and Commit are set at link time:
//
//	-ldflags "-X github.com/amexd/amexd/internal/version.Version=v1.2.3
//	          -X github.com/amexd/amexd/internal/version.Commit=<hash>"
//
// They are variables only because -X can set nothing else; nothing changes
// them at run time. Version is "dev" in a build that did not set it (go run,
// go test, a plain go build).
var (
	Version = "dev"
	Commit  = ""
)

// commitLen is how much of a commit hash String shows.
const commitLen = 12

// Revision is the commit the binary was built from: Commit when set, else
// the VCS revision the go command recorded, else "".
func Revision() string {
	if Commit != "" {
		return Commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}

// String is Version followed by the short commit, as /status and an
// upgrade's message show it: "v1.2.3 0123456789ab".
func String() string {
	rev := Revision()
	if len(rev) > commitLen {
		rev = rev[:commitLen]
	}
	if rev == "" {
		return Version
	}
	return Version + " " + rev
}

// Long is the line `amexd -version` prints after the program's name:
// version, full commit and the Go toolchain and platform it was built for.
func Long() string {
	rev := Revision()
	if rev == "" {
		rev = "unknown"
	}
	return Version + " (commit " + rev + ", " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}
