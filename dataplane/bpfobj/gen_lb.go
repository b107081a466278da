// Package bpfobj holds the bpf2go output for the programs under bpf/: the committed objects
// (*_bpfel.o) and their Go bindings. Nothing here is written by hand except the go:generate
// lines; 'make generate' rebuilds it with the pinned clang.
package bpfobj

//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags "-O2 -g -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu" -target bpfel -type vip_key -type vip_meta -type vip_addr_key -type backend -type flow_key -type ct_entry -type nat_entry -type lb_config -type lb_counter -type vip_counter -type nexthop_cache -type drop_reason -type tunnel_key -type tunnel4_key -type vip4_key -type decap4_key -type member_key Lb ../../bpf/lb/lb.bpf.c

// The same program without its counters, for the benchmark that prices them.
//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags "-O2 -g -Wall -Werror -DLB_NO_COUNTERS -I../../bpf/include -I/usr/include/x86_64-linux-gnu" -target bpfel LbNocount ../../bpf/lb/lb.bpf.c

// The same program without the decapsulation checks of bpf/lb/decap.h, for the benchmark that
// prices them.
//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags "-O2 -g -Wall -Werror -DLB_NO_DECAP_CHECKS -I../../bpf/include -I/usr/include/x86_64-linux-gnu" -target bpfel LbNodecapchecks ../../bpf/lb/lb.bpf.c
