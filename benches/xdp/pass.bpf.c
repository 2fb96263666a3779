// SPDX-License-Identifier: Apache-2.0
// benches/xdp.sh puts this on the generator's end of every veth pair: a veth takes frames
// sent back with XDP_TX (the echo floor) only when its peer runs an XDP program (or GRO),
// so every target's answers reach the generator through the same NAPI path.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
