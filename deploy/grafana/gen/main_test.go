package main

import (
	"bytes"
	"os"
	"testing"
)

// TestCommittedDashboardIsGenerated: deploy/grafana/dashboards/govcloud.json is what this
// program writes ('make dashboards' after changing it).
func TestCommittedDashboardIsGenerated(t *testing.T) {
	want, err := build()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../dashboards/govcloud.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("deploy/grafana/dashboards/govcloud.json is not what deploy/grafana/gen generates: run 'make dashboards' and commit it")
	}
}
