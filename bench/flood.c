/* flood: a bounded, rate-limited raw-packet flooder for knockgate's benchmarks.
 *
 * Sends IPv4 TCP SYNs or UDP datagrams through one AF_PACKET socket (sendmmsg, qdisc bypass)
 * on one interface, from a fixed source or from random sources of a /16, to one destination.
 * It stops by itself at --count packets or after --seconds, whichever comes first (or on
 * SIGINT/SIGTERM), and prints one JSON line: {"sent": N, "seconds": S, "pps": P, ...}.
 *
 * Safety: destinations must be in 10.201.0.0/16 and sources in 10.201.0.0/16 or
 * 10.202.0.0/16 (the benchmark's namespaces); anything else is refused.
 *
 *   gcc -O2 -Wall -o flood flood.c
 *   flood --iface IF --dst-mac MAC --dst 10.201.0.1 --proto tcp --dport 0 \
 *         --src-net 10.202.0.0 --pps 150000 --count 3000000 --seconds 20
 *
 * --dport 0 means a random destination port per packet; --pps 0 means as fast as possible.
 * --payload N (UDP) adds N bytes: --payload-kind random|base64, --first-byte B sets byte 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROGRAM "flood"
#include "frame.h"

#define MAX_BATCH 256
#define FRAME_MAX 1514

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static inline uint64_t rnd(void)
{ /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(const char *why)
{
    fprintf(stderr, "flood: %s\nusage: flood --iface IF --dst-mac MAC --dst IP "
            "--proto tcp|udp [--dport N] (--src IP | --src-net A.B.0.0) [--pps N] "
            "--count N --seconds S [--payload N] [--payload-kind random|base64] "
            "[--first-byte B] [--batch N] [--seed N]\n", why);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *iface = NULL, *dst_mac_s = NULL, *dst_s = NULL, *src_s = NULL, *net_s = NULL;
    const char *proto_s = "tcp", *kind_s = "random";
    long dport = 0, payload = 0, first_byte = -1, batch = 64;
    double pps = 0, seconds = 0, count = 0;
    uint64_t seed = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage("missing value");
        const char *v = argv[++i];
        if (!strcmp(a, "--iface")) iface = v;
        else if (!strcmp(a, "--dst-mac")) dst_mac_s = v;
        else if (!strcmp(a, "--dst")) dst_s = v;
        else if (!strcmp(a, "--src")) src_s = v;
        else if (!strcmp(a, "--src-net")) net_s = v;
        else if (!strcmp(a, "--proto")) proto_s = v;
        else if (!strcmp(a, "--dport")) dport = atol(v);
        else if (!strcmp(a, "--pps")) pps = atof(v);
        else if (!strcmp(a, "--count")) count = atof(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--payload")) payload = atol(v);
        else if (!strcmp(a, "--payload-kind")) kind_s = v;
        else if (!strcmp(a, "--first-byte")) first_byte = atol(v);
        else if (!strcmp(a, "--batch")) batch = atol(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 0);
        else usage("unknown option");
    }
    if (!iface || !dst_mac_s || !dst_s || (!src_s == !net_s))
        usage("need --iface, --dst-mac, --dst and one of --src / --src-net");
    if (count <= 0 || seconds <= 0)
        usage("--count and --seconds must both be positive (the flood is always bounded)");
    if (dport < 0 || dport > 65535 || payload < 0 || payload > 1400 || batch < 1
        || batch > MAX_BATCH || first_byte > 255)
        usage("value out of range");
    int is_tcp = !strcmp(proto_s, "tcp");
    if (!is_tcp && strcmp(proto_s, "udp"))
        usage("--proto is tcp or udp");
    int base64 = !strcmp(kind_s, "base64");
    if (!base64 && strcmp(kind_s, "random"))
        usage("--payload-kind is random or base64");

    struct in_addr dst, src = {0};
    if (inet_pton(AF_INET, dst_s, &dst) != 1)
        usage("bad --dst");
    if (!in_net(ntohl(dst.s_addr), NET_HOSTS))
        usage("--dst must be in 10.201.0.0/16");
    uint32_t src_base = 0;
    if (src_s) {
        if (inet_pton(AF_INET, src_s, &src) != 1)
            usage("bad --src");
        uint32_t h = ntohl(src.s_addr);
        if (!in_net(h, NET_HOSTS) && !in_net(h, NET_SPOOFED))
            usage("--src must be in 10.201.0.0/16 or 10.202.0.0/16");
    } else {
        struct in_addr n;
        if (inet_pton(AF_INET, net_s, &n) != 1)
            usage("bad --src-net");
        src_base = ntohl(n.s_addr) & MASK_16;
        if (src_base != NET_SPOOFED)
            usage("--src-net must be 10.202.0.0 (spoofed sources stay in 10.202.0.0/16)");
    }
    uint8_t dst_mac[6];
    if (sscanf(dst_mac_s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &dst_mac[0], &dst_mac[1],
               &dst_mac[2], &dst_mac[3], &dst_mac[4], &dst_mac[5]) != 6)
        usage("bad --dst-mac");

    rng_state ^= seed ? seed : ((uint64_t)getpid() << 32 ^ (uint64_t)(now_s() * 1e9));
    if (!rng_state)
        rng_state = 1;

    int fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: send only, never receive */
    if (fd < 0)
        die("socket(AF_PACKET)");
    int ifindex;
    uint8_t src_mac[6];
    const char *failed = interface_of(fd, iface, &ifindex, src_mac);
    if (failed)
        die(failed);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP),
                              .sll_ifindex = ifindex};
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0)
        die("bind");
    int one = 1, sndbuf = 4 << 20;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one); /* best effort */
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

    static uint8_t frames[MAX_BATCH][FRAME_MAX];
    static struct iovec iov[MAX_BATCH];
    static struct mmsghdr msgs[MAX_BATCH];
    const size_t l4len = is_tcp ? 20 : 8 + (size_t)payload;
    const size_t iplen = 20 + l4len, framelen = 14 + iplen;
    for (int b = 0; b < MAX_BATCH; b++) {
        uint8_t *f = frames[b];
        memcpy(f, dst_mac, 6);
        memcpy(f + 6, src_mac, 6);
        f[12] = 0x08, f[13] = 0x00;
        uint8_t *ip = f + 14;
        ip[0] = 0x45, ip[1] = 0;
        ip[2] = iplen >> 8, ip[3] = iplen & 0xff;
        ip[6] = 0x40, ip[7] = 0; /* DF */
        ip[8] = 64, ip[9] = is_tcp ? 6 : 17;
        memcpy(ip + 16, &dst.s_addr, 4);
        iov[b].iov_base = f;
        iov[b].iov_len = framelen;
        msgs[b].msg_hdr.msg_iov = &iov[b];
        msgs[b].msg_hdr.msg_iovlen = 1;
    }

    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    uint64_t sent = 0, errors = 0, limit = (uint64_t)count;
    const double start = now_s();
    double now = start;
    const char *why = "count";
    for (;;) {
        if (stop_requested) { why = "signal"; break; }
        if (sent >= limit) { why = "count"; break; }
        now = now_s();
        if (now - start >= seconds) { why = "time"; break; }
        uint64_t n = (uint64_t)batch;
        if (pps > 0) {
            double due = (now - start) * pps - (double)sent;
            if (due < 1) {
                double wait = (1 - due) / pps;
                if (wait > 50e-6) {
                    struct timespec ts = {0, (long)((wait - 20e-6) * 1e9)};
                    nanosleep(&ts, NULL);
                }
                continue;
            }
            if ((double)n > due)
                n = (uint64_t)due;
        }
        if (n > limit - sent)
            n = limit - sent;
        for (uint64_t b = 0; b < n; b++) {
            uint8_t *ip = frames[b] + 14, *l4 = ip + 20;
            uint64_t r = rnd();
            uint32_t saddr = src_s ? src.s_addr : htonl(src_base | (uint32_t)(r & 0xffff));
            memcpy(ip + 12, &saddr, 4);
            ip[4] = r >> 16, ip[5] = r >> 24; /* id */
            uint16_t sport = 1024 + (uint16_t)((r >> 32) % 64512);
            uint16_t dp = dport ? (uint16_t)dport : (uint16_t)(1 + (r >> 48) % 65535);
            l4[0] = sport >> 8, l4[1] = sport & 0xff;
            l4[2] = dp >> 8, l4[3] = dp & 0xff;
            if (is_tcp) {
                uint64_t s = rnd();
                memcpy(l4 + 4, &s, 4);        /* seq */
                memset(l4 + 8, 0, 4);         /* ack */
                l4[12] = 5 << 4, l4[13] = 0x02; /* SYN */
                l4[14] = 0xfa, l4[15] = 0xf0;   /* window 64240 */
                l4[16] = l4[17] = l4[18] = l4[19] = 0;
            } else {
                l4[4] = l4len >> 8, l4[5] = l4len & 0xff;
                l4[6] = l4[7] = 0;
                uint8_t *p = l4 + 8;
                for (long k = 0; k < payload; k += 8) {
                    uint64_t w = rnd();
                    for (int j = 0; j < 8 && k + j < payload; j++, w >>= 8)
                        p[k + j] = base64 ? (uint8_t)b64[w & 63] : (uint8_t)w;
                }
                if (payload && first_byte >= 0)
                    p[0] = (uint8_t)first_byte;
            }
            finish_checksums(ip, l4len);
        }
        int done = sendmmsg(fd, msgs, (unsigned)n, 0);
        if (done < 0) {
            errors++;
            if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR)
                die("sendmmsg");
            sched_yield();
            continue;
        }
        sent += (uint64_t)done;
    }
    double elapsed = now_s() - start;
    printf("{\"sent\": %llu, \"seconds\": %.3f, \"pps\": %.0f, \"target_pps\": %.0f, "
           "\"errors\": %llu, \"stopped_by\": \"%s\"}\n", (unsigned long long)sent, elapsed,
           elapsed > 0 ? sent / elapsed : 0.0, pps, (unsigned long long)errors, why);
    return 0;
}
