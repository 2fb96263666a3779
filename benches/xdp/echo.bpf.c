// SPDX-License-Identifier: Apache-2.0
// benches/xdp.sh's floor: an XDP program that bounces every UDP/IPv4 datagram for port
// ECHO_PORT straight back as a "response" (Ethernet and IP addresses and UDP ports
// swapped, the DNS header's QR bit set, no UDP checksum): what a reply costs the machine
// when nothing at all is done for it above the driver.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef ECHO_PORT
#define ECHO_PORT 5363
#endif

SEC("xdp")
int echo(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	unsigned char mac[ETH_ALEN], *dns = (void *)(udp + 1);
	__u32 addr;
	__u16 port;

	if ((void *)(dns + 3) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_UDP || udp->dest != bpf_htons(ECHO_PORT))
		return XDP_PASS;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;
	udp->check = 0;
	dns[2] |= 0x80;
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
