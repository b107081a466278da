package main

import (
	"bytes"
	"strings"
	"testing"
)

// Issue 22: `govcloud get` with no kind said only "accepts between 1 and 2 arg(s)".
func TestGetWithoutKindListsKinds(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get"}, "get needs a KIND: one of departments, pools, segments, hosts, images, volumes, vms, services, pricelists, securitypolicies, all (e.g. 'govcloud get services')"},
		{[]string{"get", "services", "a", "b"}, "get takes KIND [NAME], got 3 arguments: services a b"},
		{[]string{"get", "routers"}, `unknown kind "routers" (want one of Department, AddressPool, Segment, Host, Image, Volume, VM, Service, PriceList, SecurityPolicy, or all)`},
	} {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(tc.args)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

// Issue 22: `usage --help` said the bill is rated with deploy/examples/prices.yaml while the
// README said the list is built in and GOVCLOUD_PRICES overrides it. Both now say the latter
// (and that PriceList objects rate the days from their effectiveFrom).
func TestUsageHelpSaysWherePricesComeFrom(t *testing.T) {
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"usage", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rated with the controller's GOVCLOUD_PRICES file, else the built-in list (deploy/examples/prices.yaml)", "PriceList objects"} {
		if !strings.Contains(strings.Join(strings.Fields(out.String()), " "), want) {
			t.Errorf("usage --help lacks %q:\n%s", want, out.String())
		}
	}
}
