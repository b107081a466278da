package bpfobj

//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags "-O2 -g -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu" -target bpfel -type sink_counter -type gen_template Bench ../../bpf/bench/bench.bpf.c
