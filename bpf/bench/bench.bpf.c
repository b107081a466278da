// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* bench.bpf.c — helpers for benchmarks and tests, never attached by the agent. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct sink_counter {
	__u64 packets;
	__u64 bytes;
};

/* What xdp_sink received. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_counter);
} sink_stats SEC(".maps");

/* Count and drop: the receiving end of a benchmark wire, as cheap as a receiver can be. */
SEC("xdp.frags")
int xdp_sink(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct sink_counter *c = bpf_map_lookup_elem(&sink_stats, &zero);
	if (c) {
		c->packets++;
		c->bytes += ctx->data_end - ctx->data;
	}
	return XDP_DROP;
}

/* The frame xdp_gen restores before every run of the program under test. */
struct gen_template {
	__u32 len;
	__u8 data[256];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_template);
} gen_frame SEC(".maps");

/* Slot 0: the program under test. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} gen_next SEC(".maps");

/* Traffic generator for BPF_PROG_TEST_RUN's live-frames mode: the kernel recycles frame pages
 * without restoring their content, so a program that rewrites packets would otherwise see its
 * own output on the next lap. Restore the template, then tail-call the program under test. */
SEC("xdp.frags")
int xdp_gen(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct gen_template *t = bpf_map_lookup_elem(&gen_frame, &zero);
	if (!t)
		return XDP_ABORTED;
	__u64 len = t->len & 0x1ff; /* a bound the verifier keeps */
	if (len < 14 || len > sizeof(t->data))
		return XDP_ABORTED;
	int cur = ctx->data_end - ctx->data;
	if (cur != (int)len && bpf_xdp_adjust_tail(ctx, (int)len - cur))
		return XDP_ABORTED;
	if (bpf_xdp_store_bytes(ctx, 0, t->data, len))
		return XDP_ABORTED;
	bpf_tail_call(ctx, &gen_next, 0);
	return XDP_ABORTED;
}

/* Send the frame back out unchanged: the transmit path's own cost, with no balancing. */
SEC("xdp.frags")
int xdp_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}
