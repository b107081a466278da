package metering

import "sync"

// FakeTraffic is a TrafficSource for tests: set its fields, bump counters with Add.
type FakeTraffic struct {
	mu    sync.Mutex
	Refs  []SegmentRef
	Stats []Traffic
	Drop  []Drop
	Err   error
}

// Segments implements TrafficSource.
func (f *FakeTraffic) Segments() []SegmentRef {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]SegmentRef(nil), f.Refs...)
}

// Traffic implements TrafficSource.
func (f *FakeTraffic) Traffic() ([]Traffic, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Traffic(nil), f.Stats...), f.Err
}

// Drops implements TrafficSource.
func (f *FakeTraffic) Drops() ([]Drop, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Drop(nil), f.Drop...), f.Err
}

// Add counts packets of size bytes each on one segment and direction.
func (f *FakeTraffic) Add(dept, seg, dir string, packets, bytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.Stats {
		t := &f.Stats[i]
		if t.Department == dept && t.Segment == seg && t.Direction == dir {
			t.Packets += packets
			t.Bytes += bytes
			return
		}
	}
	f.Stats = append(f.Stats, Traffic{Department: dept, Segment: seg, Direction: dir, Packets: packets, Bytes: bytes})
}

// FakeService is a ServiceSource for tests.
type FakeService struct {
	Svcs []ServiceCounter
	Bes  []BackendState
	Err  error
}

// Services implements ServiceSource.
func (f *FakeService) Services() ([]ServiceCounter, error) { return f.Svcs, f.Err }

// Backends implements ServiceSource.
func (f *FakeService) Backends() ([]BackendState, error) { return f.Bes, f.Err }

// FakeBGP is a BGPSource for tests.
type FakeBGP struct {
	Sess []BGPSession
	Err  error
}

// Sessions implements BGPSource.
func (f *FakeBGP) Sessions() ([]BGPSession, error) { return f.Sess, f.Err }

// FakeCompute is a ComputeSource for tests.
type FakeCompute struct {
	VM  []VMUsage
	Vol []VolumeUsage
	Err error
}

// VMs implements ComputeSource.
func (f *FakeCompute) VMs() ([]VMUsage, error) { return f.VM, f.Err }

// Volumes implements ComputeSource.
func (f *FakeCompute) Volumes() ([]VolumeUsage, error) { return f.Vol, f.Err }

// FakeSources builds fake sources for n departments ("dept01".."deptNN"), each with segs
// segments, a service with two backends, a VM and a volume, with distinct non-zero counters:
// the scrape benchmark and the dashboard test use it.
func FakeSources(host string, n, segs int) Sources {
	tr := &FakeTraffic{}
	svc := &FakeService{}
	cmp := &FakeCompute{}
	for i := 1; i <= n; i++ {
		d := deptName(i)
		for j := 1; j <= segs; j++ {
			s := d + "-seg" + itoa(j)
			tr.Refs = append(tr.Refs, SegmentRef{Department: d, Segment: s})
			tr.Add(d, s, "rx", uint64(100*i+j), uint64(100000*i+j))
			tr.Add(d, s, "tx", uint64(50*i+j), uint64(40000*i+j))
		}
		tr.Drop = append(tr.Drop, Drop{Department: d, Segment: d + "-seg1", Reason: "wrong_vlan", Packets: uint64(i)})
		svc.Svcs = append(svc.Svcs, ServiceCounter{Department: d, Service: d + "-web", Bytes: uint64(7000 * i), Packets: uint64(70 * i), Connections: uint64(7 * i)})
		svc.Bes = append(svc.Bes, BackendState{Department: d, Service: d + "-web", Backend: d + "-vm1", Up: true},
			BackendState{Department: d, Service: d + "-web", Backend: d + "-vm2", Up: i%2 == 0})
		cmp.VM = append(cmp.VM, VMUsage{Department: d, VM: d + "-vm1", VCPUSeconds: float64(3600 * i)})
		cmp.Vol = append(cmp.Vol, VolumeUsage{Department: d, Volume: d + "-data", AllocatedBytes: uint64(i) << 30})
	}
	tr.Drop = append(tr.Drop, Drop{Reason: "unknown_vlan", Packets: 3})
	bgp := &FakeBGP{Sess: []BGPSession{{Peer: "198.18.0.1", Up: true, Advertised: n}}}
	return Sources{Host: host, Traffic: tr, Service: svc, BGP: bgp, Compute: cmp}
}

func deptName(i int) string {
	if i < 10 {
		return "dept0" + itoa(i)
	}
	return "dept" + itoa(i)
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
