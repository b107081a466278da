package lab

import "github.com/govcloud/govcloud/dataplane/nsexec"

// inNS runs fn on a locked thread inside the named namespace.
func inNS(name string, fn func() error) error { return nsexec.DoNamed(name, fn) }
