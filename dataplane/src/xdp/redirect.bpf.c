// SPDX-License-Identifier: Apache-2.0
// adox's XDP program (built only with the `xdp` cargo feature): plain UDP datagrams to a
// service address and port go to the AF_XDP socket of the queue they arrived on, where
// an adoxd worker answers packet-cache hits in place. Everything else, and anything this
// program does not fully understand (VLAN tags, IPv4 options or fragments, IPv6
// extension headers), goes on to the kernel's stack with XDP_PASS, as do frames for
// another MAC address (a VRRP virtual MAC, a macvlan) and a datagram for a queue without
// a socket (the redirect's fallback).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// An address and port the service listens on (network byte order; IPv4 in the first four
// octets). A key with an all-zero address is a wildcard listener on that port.
struct service {
	__u8 addr[16];
	__u16 port;
	__u16 family;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct service);
	__type(value, __u8);
} services SEC(".maps");

// The interface's MAC address (its first six octets), set at load.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} own_mac SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

static __always_inline int is_service(struct service *key)
{
	if (bpf_map_lookup_elem(&services, key))
		return 1;
	__builtin_memset(key->addr, 0, sizeof(key->addr));
	return bpf_map_lookup_elem(&services, key) != 0;
}

SEC("xdp")
int adox_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct service key = {};
	struct udphdr *udp;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	__u32 zero = 0;
	unsigned char *mac = bpf_map_lookup_elem(&own_mac, &zero);
	if (!mac)
		return XDP_PASS;
#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++)
		if (eth->h_dest[i] != mac[i])
			return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
			return XDP_PASS;
		// More fragments, or a fragment offset: the stack reassembles.
		if (ip->frag_off & bpf_htons(0x3fff))
			return XDP_PASS;
		udp = (void *)(ip + 1);
		__builtin_memcpy(key.addr, &ip->daddr, 4);
		key.family = 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
			return XDP_PASS;
		udp = (void *)(ip6 + 1);
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
		key.family = 6;
	} else {
		return XDP_PASS;
	}
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	key.port = udp->dest;
	if (!is_service(&key))
		return XDP_PASS;
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
