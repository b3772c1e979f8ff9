/* frame.h: what flood.c and probe.c share: checksums, the benchmark's address ranges, errors.
 * Each program defines PROGRAM ("flood", "probe") before including it. */
#ifndef KNOCKGATE_BENCH_FRAME_H
#define KNOCKGATE_BENCH_FRAME_H

#include <errno.h>
#include <net/if.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define NET_HOSTS 0x0ac90000u   /* 10.201.0.0/16: the namespaces' own hosts */
#define NET_SPOOFED 0x0aca0000u /* 10.202.0.0/16: spoofed flood sources */
#define MASK_16 0xffff0000u

static inline void die(const char *what)
{
    fprintf(stderr, PROGRAM ": %s: %s\n", what, strerror(errno));
    exit(1);
}

static inline uint32_t sum16(const void *data, size_t len, uint32_t acc)
{
    const uint8_t *p = data;
    while (len > 1) {
        acc += (uint32_t)p[0] << 8 | p[1];
        p += 2;
        len -= 2;
    }
    if (len)
        acc += (uint32_t)p[0] << 8;
    return acc;
}

static inline uint16_t fold(uint32_t acc)
{
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)~acc;
}

static inline int in_net(uint32_t host_order, uint32_t net)
{
    return (host_order & MASK_16) == net;
}

/* Fill in the IPv4 header checksum and the TCP or UDP checksum of a finished IPv4 packet
 * (20-byte header, no options) whose L4 part is l4len bytes long. */
static inline void finish_checksums(uint8_t *ip, size_t l4len)
{
    uint8_t *l4 = ip + 20;
    int is_tcp = ip[9] == 6;
    ip[10] = ip[11] = 0;
    uint16_t c = fold(sum16(ip, 20, 0));
    ip[10] = c >> 8, ip[11] = c & 0xff;
    int at = is_tcp ? 16 : 6;
    l4[at] = l4[at + 1] = 0;
    /* pseudo-header: addresses, protocol, length */
    uint32_t acc = sum16(ip + 12, 8, 0) + ip[9] + (uint32_t)l4len;
    uint16_t lc = fold(sum16(l4, l4len, acc));
    if (!is_tcp && lc == 0)
        lc = 0xffff;
    l4[at] = lc >> 8, l4[at + 1] = lc & 0xff;
}

/* The index and MAC address of interface ``name``, asked through socket ``fd``; the name of
 * the ioctl that failed, or NULL. */
static inline const char *interface_of(int fd, const char *name, int *ifindex, uint8_t mac[6])
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0)
        return "SIOCGIFINDEX";
    *ifindex = ifr.ifr_ifindex;
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0)
        return "SIOCGIFHWADDR";
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    return NULL;
}

#endif
