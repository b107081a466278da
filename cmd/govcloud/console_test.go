package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
)

func TestLastLinesAndConsoleText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 2, "b\nc"},
		{"a\nb\n", 5, "a\nb\n"},
		{"a\nb\n", 0, ""},
		{"", 3, ""},
	} {
		if got := string(lastLines([]byte(tc.in), tc.n)); got != tc.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"login: \x1b[31mroot\x1b[0m\r\n", "login: [31mroot[0m\n"},
		{"bell\a tab\t", "bell tab\t"},
		{"c1 \u009b2J csi", "c1 2J csi"},
		{"bad \xff utf-8", "bad \ufffd utf-8"},
		{"plain é text\n", "plain é text\n"},
	} {
		if got := string(consoleText([]byte(tc.in), false)); got != tc.want {
			t.Errorf("consoleText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := string(consoleText([]byte("\x1b[0m"), true)); got != "\x1b[0m" {
		t.Errorf("--raw changed the bytes: %q", got)
	}
}

// tailConsole prints the last lines, then only what follows, asking from the offset it got.
func TestTailConsole(t *testing.T) {
	logs := []string{"one\ntwo\nthree\n", "one\ntwo\nthree\nfour\n", "one\ntwo\nthree\nfour\n", "new\n"}
	var afters []int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	read := func(_ context.Context, vm string, after int64) (*client.ConsoleTail, error) {
		if vm == "nope" {
			return nil, &client.Error{Status: http.StatusNotFound, Message: `VM "nope" not found`}
		}
		i := len(afters)
		afters = append(afters, after)
		if i == len(logs)-1 {
			cancel()
		}
		l := logs[min(i, len(logs)-1)]
		t := &client.ConsoleTail{VM: vm, Host: "h1", End: int64(len(l)), Data: []byte(l)}
		if after >= 0 && after <= t.End {
			t.Data = t.Data[after:]
		}
		return t, nil
	}
	var out, errs bytes.Buffer
	if err := tailConsole(ctx, &out, &errs, read, "vm1", 2, true, false, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if want := "two\nthree\nfour\nnew\n"; out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
	if want := []int64{-1, 14, 19, 19}; len(afters) != len(want) || afters[1] != want[1] || afters[2] != want[2] || afters[3] != want[3] {
		t.Errorf("asked after %v, want %v", afters, want)
	}
	if !strings.Contains(errs.String(), "the log started again") {
		t.Errorf("no note of the restarted log: %q", errs.String())
	}
	err := tailConsole(context.Background(), &out, &errs, read, "nope", 2, false, false, time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), `VM "nope" not found`) {
		t.Errorf("unknown VM: %v", err)
	}
}
