package config

import (
	"slices"
	"strings"
	"testing"
)

const goodSHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func imageDoc(name, spec string) string {
	return "---\napiVersion: govcloud/v1\nkind: Image\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
}

func vmDoc(name, spec string) string {
	return "---\napiVersion: govcloud/v1\nkind: VM\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
}

// A test key (ssh-keygen -t ed25519): its body names its type, as sshKey checks.
const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@example"

func TestImageValid(t *testing.T) {
	y := base + imageDoc("debian-12", "{source: debian-12.qcow2, sha256: "+goodSHA+", os: debian}") +
		imageDoc("ubuntu", "{source: vendor/ubuntu-24.04.qcow2, sha256: "+goodSHA+", os: ubuntu}") +
		vmDoc("d1", "{department: lands, vcpus: 1, memoryMiB: 512, image: debian-12, sshKeys: ['"+testKey+"'], networks: [{segment: lands-web}]}") +
		vmDoc("t1", "{department: lands, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: lands-web}]}")
	if err := parseValidate(t, y); err != nil {
		t.Fatalf("valid images refused: %v", err)
	}
	if NormalizeKind("images") != KindImage || Plural(KindImage) != "images" {
		t.Fatalf("kind names: %q %q", NormalizeKind("images"), Plural(KindImage))
	}
}

// Every member of the class of bad images (and bad references to them) is refused with the
// object and the value named.
func TestImageBad(t *testing.T) {
	img := func(spec string) string { return base + imageDoc("img", spec) }
	for _, tc := range []struct {
		desc, yaml string
		want       []string
	}{
		{"sha256 too short", img("{source: a.qcow2, sha256: 9f86d081, os: debian}"), []string{`Image "img"`, `spec.sha256 "9f86d081"`, "64 hex digits", "got 8"}},
		{"sha256 too long", img("{source: a.qcow2, sha256: " + goodSHA + "00, os: debian}"), []string{`spec.sha256 "` + goodSHA + `00"`, "got 66"}},
		{"sha256 not hex", img("{source: a.qcow2, sha256: " + strings.Repeat("g", 64) + ", os: debian}"), []string{`spec.sha256 "gggg`, "hex digits"}},
		{"sha256 upper case", img("{source: a.qcow2, sha256: " + strings.ToUpper(goodSHA) + ", os: debian}"), []string{`spec.sha256 "9F86`, "lower-case"}},
		{"sha256 missing", img("{source: a.qcow2, os: debian}"), []string{`Image "img"`, "spec.sha256", "required"}},
		{"source escapes the store", img("{source: ../../etc/shadow, sha256: " + goodSHA + ", os: debian}"), []string{`spec.source "../../etc/shadow"`, "leaves the image store"}},
		{"source escapes from a subdirectory", img("{source: a/../../b.qcow2, sha256: " + goodSHA + ", os: debian}"), []string{`spec.source "a/../../b.qcow2"`, "leaves the image store"}},
		{"source absolute", img("{source: /var/lib/x.qcow2, sha256: " + goodSHA + ", os: debian}"), []string{`spec.source "/var/lib/x.qcow2"`, "relative"}},
		{"source not clean", img("{source: a//b.qcow2, sha256: " + goodSHA + ", os: debian}"), []string{`spec.source "a//b.qcow2"`, "clean"}},
		{"source with a space", img("{source: 'my image.qcow2', sha256: " + goodSHA + ", os: debian}"), []string{`spec.source "my image.qcow2"`, "not allowed"}},
		{"source missing", img("{sha256: " + goodSHA + ", os: debian}"), []string{"spec.source", "required"}},
		{"unknown OS", img("{source: a.qcow2, sha256: " + goodSHA + ", os: windows}"), []string{`spec.os "windows"`, "unknown OS", "debian"}},
		{"OS missing", img("{source: a.qcow2, sha256: " + goodSHA + "}"), []string{"spec.os", "required"}},
		{"named tiny", base + imageDoc("tiny", "{source: a.qcow2, sha256: "+goodSHA+", os: linux}"), []string{`Image "tiny"`, `metadata.name "tiny"`, "built-in"}},
		{"VM names an undeclared image", base + vmDoc("v1", "{department: lands, vcpus: 1, memoryMiB: 64, image: centos, networks: [{segment: lands-web}]}"), []string{`VM "v1"`, `spec.image "centos"`, "unknown image"}},
		{"volume names an undeclared image", base + "---\napiVersion: govcloud/v1\nkind: Volume\nmetadata: {name: vol}\nspec: {department: lands, sizeGiB: 1, image: debian-13}\n", []string{`Volume "vol"`, `spec.image "debian-13"`, "unknown image"}},
		{"ssh key of an unknown type", base + vmDoc("v1", "{department: lands, vcpus: 1, memoryMiB: 64, sshKeys: ['ssh-dss AAAAB3NzaC1kc3M='], networks: [{segment: lands-web}]}"), []string{`spec.sshKeys[0] "ssh-dss AAAAB3NzaC1kc3M="`, "unknown key type"}},
		{"ssh key body not base64", base + vmDoc("v1", "{department: lands, vcpus: 1, memoryMiB: 64, sshKeys: ['ssh-ed25519 !!!'], networks: [{segment: lands-web}]}"), []string{`spec.sshKeys[0] "ssh-ed25519 !!!"`, "not a base64 ssh-ed25519 key"}},
		{"ssh key body of another type", base + vmDoc("v1", "{department: lands, vcpus: 1, memoryMiB: 64, sshKeys: ['ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl'], networks: [{segment: lands-web}]}"), []string{`spec.sshKeys[0] "ssh-rsa AAAAC3`, "not a base64 ssh-rsa key"}},
		{"ssh key without a body", base + vmDoc("v1", "{department: lands, vcpus: 1, memoryMiB: 64, sshKeys: [ssh-ed25519], networks: [{segment: lands-web}]}"), []string{`spec.sshKeys[0] "ssh-ed25519"`, "TYPE BASE64"}},
	} {
		t.Run(tc.desc, func(t *testing.T) { wantRefused(t, tc.yaml, tc.want...) })
	}
}

// An image in use cannot go from under its VMs and volumes: they are its dependents (delete
// refuses while any is left).
func TestImageDependents(t *testing.T) {
	y := base + imageDoc("deb", "{source: d.qcow2, sha256: "+goodSHA+", os: debian}") +
		imageDoc("unused", "{source: u.qcow2, sha256: "+goodSHA+", os: debian}") +
		vmDoc("d1", "{department: lands, vcpus: 1, memoryMiB: 512, image: deb, networks: [{segment: lands-web}]}") +
		"---\napiVersion: govcloud/v1\nkind: Volume\nmetadata: {name: vol}\nspec: {department: lands, sizeGiB: 1, image: deb}\n"
	objs, err := Parse("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	st := NewState()
	for _, o := range objs {
		st.Objects[o.Key()] = o
	}
	if err := Validate(st).Err(); err != nil {
		t.Fatal(err)
	}
	got := Dependents(st, st.Get(KindImage, "deb"))
	if len(got) != 2 || !slices.Contains(got, Key{KindVM, "d1"}) || !slices.Contains(got, Key{KindVolume, "vol"}) {
		t.Errorf("dependents of image deb: %v", got)
	}
	if d := Dependents(st, st.Get(KindImage, "unused")); len(d) != 0 {
		t.Errorf("dependents of an unused image: %v", d)
	}
}

// A VM's vCPUs and memory: omitted (0) is said as required, out of range names the value.
func TestVMSizeBounds(t *testing.T) {
	for _, tc := range []struct {
		desc, spec string
		want       []string
	}{
		{"vcpus omitted", "{department: lands, memoryMiB: 64, networks: [{segment: lands-web}]}", []string{"spec.vcpus", "required: from 1 to 1024"}},
		{"memory omitted", "{department: lands, vcpus: 1, networks: [{segment: lands-web}]}", []string{"spec.memoryMiB", "required: from 16 to"}},
		{"vcpus negative", "{department: lands, vcpus: -1, memoryMiB: 64, networks: [{segment: lands-web}]}", []string{`spec.vcpus "-1"`, "must be from 1 to 1024"}},
		{"vcpus too many", "{department: lands, vcpus: 1025, memoryMiB: 64, networks: [{segment: lands-web}]}", []string{`spec.vcpus "1025"`, "must be from 1 to 1024"}},
		{"memory too small", "{department: lands, vcpus: 1, memoryMiB: 15, networks: [{segment: lands-web}]}", []string{`spec.memoryMiB "15"`, "must be from 16 to"}},
	} {
		t.Run(tc.desc, func(t *testing.T) { wantRefused(t, base+vmDoc("v1", tc.spec), tc.want...) })
	}
}

// A VM pinned to a host (spec.host) with a hostSelector that host does not match was placed on
// the host without a word; it is refused naming the pin, the selector and what misses.
func TestVMPinMatchesSelector(t *testing.T) {
	hosts := "---\napiVersion: govcloud/v1\nkind: Host\nmetadata: {name: h1}\nspec: {uplink: eth0, address: 198.18.0.11, labels: {rack: r1, tier: gp}}\n"
	for _, tc := range []struct {
		desc, extra string
		want        []string // empty: accepted
	}{
		{"selector matches the pinned host", ", host: h1, hostSelector: {rack: r1}", nil},
		{"two labels, both match", ", host: h1, hostSelector: {rack: r1, tier: gp}", nil},
		{"selector alone (placement uses it)", ", hostSelector: {rack: r9}", nil},
		{"value differs", ", host: h1, hostSelector: {rack: r9}", []string{`spec.hostSelector "rack=r9"`, `pinned to host "h1"`, "does not match rack=r9"}},
		{"label absent on the host", ", host: h1, hostSelector: {rack: r1, zone: z2}", []string{`spec.hostSelector "rack=r1,zone=z2"`, "does not match zone=z2"}},
	} {
		y := base + hosts + vmDoc("v1", "{department: lands, vcpus: 1, memoryMiB: 64, networks: [{segment: lands-web}]"+tc.extra+"}")
		t.Run(tc.desc, func(t *testing.T) {
			if tc.want == nil {
				if err := parseValidate(t, y); err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantRefused(t, y, tc.want...)
		})
	}
}
