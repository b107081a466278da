package guestimage

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxShellOutput bounds what Run keeps of a guest's output: a guest decides what it prints.
const MaxShellOutput = 1 << 20

// One connection at a time per socket: qemu's serial socket takes a single client.
var shellMu sync.Map // socket path -> *sync.Mutex

// Run runs script with the guest's shell on its second serial port, reached through the unix
// socket qemu listens on, and returns what it printed (stdout and stderr, \r removed) and its
// exit status. The guest's shell must be up (it starts with init, before the HTTP server).
func Run(ctx context.Context, socket, script string) (string, int, error) {
	mu, _ := shellMu.LoadOrStore(socket, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return "", -1, fmt.Errorf("guest shell %s: %w", socket, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()

	var nb [6]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	begin, end := "__gc_begin_"+nonce, "__gc_end_"+nonce
	// The markers are printed by echo, so a terminal echoing the input (before the shell turned
	// echo off) shows "$?" where the real end marker has digits.
	if _, err := fmt.Fprintf(c, "\necho %s; %s\necho %s_$?\n", begin, script, end); err != nil {
		return "", -1, fmt.Errorf("guest shell %s: write: %w", socket, err)
	}
	endRE := regexp.MustCompile(regexp.QuoteMeta(end) + `_(\d+)`)
	var out strings.Builder
	started := false
	sc := bufio.NewScanner(c)
	sc.Buffer(nil, 64<<10)
	for sc.Scan() {
		if out.Len() > MaxShellOutput {
			return out.String()[:MaxShellOutput], -1, fmt.Errorf("guest shell %s: output beyond %d bytes", socket, MaxShellOutput)
		}
		line := strings.TrimRight(sc.Text(), "\r")
		if m := endRE.FindStringSubmatch(line); m != nil {
			rc, _ := strconv.Atoi(m[1])
			return out.String(), rc, nil
		}
		if !started {
			// An interactive shell may print its prompt before the marker on the same line.
			started = strings.HasSuffix(strings.TrimSpace(line), begin)
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	err = sc.Err()
	if err == nil {
		err = fmt.Errorf("connection closed")
	}
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return out.String(), -1, fmt.Errorf("guest shell %s: %w (output so far: %q)", socket, err, out.String())
}
