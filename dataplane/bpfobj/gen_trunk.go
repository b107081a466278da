package bpfobj

//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags "-O2 -g -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu" -target bpfel -type trunk_segment -type trunk_port -type trunk_config -type trunk_stat_key -type trunk_drop_key -type trunk_counter -type trunk_guest -type trunk_rate -type trunk_bucket_key -type trunk_bucket Trunk ../../bpf/trunk/trunk.bpf.c

// The same programs without counters, for the benchmark that prices them.
//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags "-O2 -g -Wall -Werror -DTRUNK_NO_COUNTERS -I../../bpf/include -I/usr/include/x86_64-linux-gnu" -target bpfel TrunkNocount ../../bpf/trunk/trunk.bpf.c
