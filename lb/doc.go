// Package lb is the pure-Go model of the L4 load balancer: services keyed by department routing
// domain, backends with weights, and incremental Maglev lookup tables. It does no I/O and never
// touches the kernel; dataplane/ turns its desired state into BPF maps.
package lb
