package config

import (
	"strings"
	"testing"
)

// powerState and restartGeneration: the good values pass, every bad one is refused naming
// the VM, the field and the value.
func TestVMLifecycleFields(t *testing.T) {
	vm := func(extra string) string {
		return base + vmDoc("v1", "{department: lands, vcpus: 1, memoryMiB: 64, networks: [{segment: lands-web}]"+extra+"}")
	}
	for _, tc := range []struct {
		desc, extra string
		want        []string // nil: valid
	}{
		{"omitted", "", nil},
		{"running", ", powerState: running", nil},
		{"stopped", ", powerState: stopped", nil},
		{"generation 0", ", restartGeneration: 0", nil},
		{"generation raised", ", restartGeneration: 7", nil},
		{"stopped with a generation", ", powerState: stopped, restartGeneration: 3", nil},
		{"capitalised", ", powerState: Running", []string{`VM "v1"`, `spec.powerState "Running"`, `"running" or "stopped"`}},
		{"paused", ", powerState: paused", []string{`VM "v1"`, `spec.powerState "paused"`}},
		{"off", ", powerState: 'off'", []string{`spec.powerState "off"`}},
		{"negative generation", ", restartGeneration: -1", []string{`VM "v1"`, `spec.restartGeneration "-1"`, "0 or more"}},
		{"generation not a number", ", restartGeneration: soon", []string{"restartGeneration", "soon"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := parseValidate(t, vm(tc.extra))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
