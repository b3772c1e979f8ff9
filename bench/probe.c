/* probe: knock-to-open latency of one round, timed on the client's wire.
 *
 * Sends the final knock (a TCP SYN, or a UDP datagram with a given payload) from --src to --dst
 * as a raw frame, then TCP SYNs to --dst:--port until one is answered with a SYN-ACK. The
 * latency is the time between two kernel timestamps taken on the client's interface: the
 * knock frame leaving (as a packet tap sees it) and the first SYN-ACK arriving. So neither the
 * cost of creating sockets nor the client's own wake-up counts, for any daemon.
 *
 * Probes go out every 20 us for the first 2 ms after the knock, every 100 us until 50 ms, then
 * every 1 ms: the resolution stays well under the latency being measured without turning slow
 * daemons' rounds into floods. A probe SYN-ACK is answered by the client kernel's RST.
 *
 *   gcc -O2 -Wall -o probe probe.c
 *   probe --iface IF --dst-mac MAC --src 10.201.1.7 --dst 10.201.0.1 --port 22 \
 *         --knock tcp:9000 [--payload-hex HEX] [--at-ns MONOTONIC_NS] [--deadline-ms 1000]
 *
 * --at-ns: send the knock at this CLOCK_MONOTONIC time (the harness sends the earlier knocks
 * itself and wants the last one a fixed time later). Prints one JSON line:
 * {"ms": 0.123 or null, "probes": N, "knock_ns": the knock's departure (CLOCK_REALTIME),
 *  "realtime": whether it got SCHED_FIFO}.
 * Addresses outside 10.201.0.0/16 are refused.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROGRAM "probe"
#include "frame.h"

#define FRAME_MAX 1514
#define PAYLOAD_MAX 1400

static void usage(const char *why)
{
    fprintf(stderr, "probe: %s\nusage: probe --iface IF --dst-mac MAC --src IP --dst IP "
            "--port N --knock tcp:N|udp:N [--payload-hex HEX] [--at-ns NS] "
            "[--deadline-ms MS]\n", why);
    exit(2);
}

static int64_t ns_of(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static int64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ns_of(&ts);
}

struct frame {
    uint8_t bytes[FRAME_MAX];
    size_t len;
};

/* An Ethernet + IPv4 + (TCP SYN | UDP with payload) frame, checksums done. */
static void build(struct frame *f, const uint8_t *dst_mac, const uint8_t *src_mac,
                  uint32_t src, uint32_t dst, int tcp, uint16_t sport, uint16_t dport,
                  const uint8_t *payload, size_t payload_len)
{
    size_t l4len = tcp ? 20 : 8 + payload_len;
    size_t iplen = 20 + l4len;
    uint8_t *b = f->bytes, *ip = b + 14, *l4 = ip + 20;
    memset(b, 0, 14 + iplen);
    memcpy(b, dst_mac, 6);
    memcpy(b + 6, src_mac, 6);
    b[12] = 0x08;
    ip[0] = 0x45;
    ip[2] = iplen >> 8, ip[3] = iplen & 0xff;
    ip[4] = (uint8_t)rand(), ip[5] = (uint8_t)rand();
    ip[6] = 0x40; /* DF */
    ip[8] = 64, ip[9] = tcp ? 6 : 17;
    memcpy(ip + 12, &src, 4);
    memcpy(ip + 16, &dst, 4);
    l4[0] = sport >> 8, l4[1] = sport & 0xff;
    l4[2] = dport >> 8, l4[3] = dport & 0xff;
    if (tcp) {
        uint32_t seq = (uint32_t)rand() << 1 ^ (uint32_t)rand();
        memcpy(l4 + 4, &seq, 4);
        l4[12] = 5 << 4, l4[13] = 0x02; /* SYN */
        l4[14] = 0xfa, l4[15] = 0xf0;   /* window 64240 */
    } else {
        l4[4] = l4len >> 8, l4[5] = l4len & 0xff;
        memcpy(l4 + 8, payload, payload_len);
    }
    finish_checksums(ip, l4len);
    f->len = 14 + iplen;
}

/* Only frames from or to the round's own (fresh) source address reach the probe. */
static void attach_filter(int fd, uint32_t src_host_order)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 26),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, src_host_order, 2, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 30),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, src_host_order, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0xffff),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0)
        die("SO_ATTACH_FILTER");
    char sink[FRAME_MAX]; /* queued before the filter was attached: unfiltered */
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) >= 0)
        ;
}

enum seen { SEEN_NOTHING, SEEN_KNOCK, SEEN_ACCEPT };

/* What one captured frame is to this round, with its kernel timestamp in *at. */
static enum seen classify(int fd, const struct frame *knock, uint32_t server, uint16_t port,
                          int64_t *at)
{
    uint8_t b[FRAME_MAX];
    char control[256];
    struct sockaddr_ll from;
    struct iovec iov = {b, sizeof b};
    struct msghdr msg = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov,
                         .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    *at = -1;
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return SEEN_NOTHING;
        die("recvmsg");
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS)
            *at = ns_of((const struct timespec *)CMSG_DATA(c));
    if (*at < 0 || n < 14 + 20 + 8)
        return SEEN_NOTHING;
    const uint8_t *ip = b + 14, *l4 = ip + (ip[0] & 0x0f) * 4;
    if (from.sll_pkttype == PACKET_OUTGOING) {
        const uint8_t *k = knock->bytes + 14;
        int same = ip[9] == k[9] && !memcmp(ip + 12, k + 12, 8) && !memcmp(l4, k + 20, 4);
        return same ? SEEN_KNOCK : SEEN_NOTHING;
    }
    if (ip[9] != 6 || memcmp(ip + 12, &server, 4) || n < (l4 - b) + 20)
        return SEEN_NOTHING;
    int from_port = (l4[0] << 8 | l4[1]) == port;
    return from_port && (l4[13] & 0x12) == 0x12 ? SEEN_ACCEPT : SEEN_NOTHING;
}

static int64_t probe_gap_ns(int64_t since_knock_ns)
{
    if (since_knock_ns < 2000000)
        return 20000;
    return since_knock_ns < 50000000 ? 100000 : 1000000;
}

static size_t parse_hex(const char *hex, uint8_t *out)
{
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > PAYLOAD_MAX)
        usage("--payload-hex: an even number of hex digits, at most 1400 bytes");
    for (size_t i = 0; i < n / 2; i++)
        if (sscanf(hex + 2 * i, "%2hhx", &out[i]) != 1)
            usage("--payload-hex: not hex");
    return n / 2;
}

int main(int argc, char **argv)
{
    const char *iface = NULL, *dst_mac_s = NULL, *src_s = NULL, *dst_s = NULL;
    const char *knock_s = NULL, *hex = "";
    long port = 0;
    double deadline_ms = 1000;
    int64_t at_ns = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage("missing value");
        const char *v = argv[++i];
        if (!strcmp(a, "--iface")) iface = v;
        else if (!strcmp(a, "--dst-mac")) dst_mac_s = v;
        else if (!strcmp(a, "--src")) src_s = v;
        else if (!strcmp(a, "--dst")) dst_s = v;
        else if (!strcmp(a, "--port")) port = atol(v);
        else if (!strcmp(a, "--knock")) knock_s = v;
        else if (!strcmp(a, "--payload-hex")) hex = v;
        else if (!strcmp(a, "--at-ns")) at_ns = strtoll(v, NULL, 10);
        else if (!strcmp(a, "--deadline-ms")) deadline_ms = atof(v);
        else usage("unknown option");
    }
    if (!iface || !dst_mac_s || !src_s || !dst_s || !knock_s)
        usage("need --iface, --dst-mac, --src, --dst and --knock");
    char proto[4];
    long knock_port;
    if (sscanf(knock_s, "%3[a-z]:%ld", proto, &knock_port) != 2 || knock_port < 1
        || knock_port > 65535 || (strcmp(proto, "tcp") && strcmp(proto, "udp")))
        usage("--knock is tcp:PORT or udp:PORT");
    if (port < 1 || port > 65535 || deadline_ms <= 0 || deadline_ms > 60000)
        usage("value out of range");
    struct in_addr src, dst;
    if (inet_pton(AF_INET, src_s, &src) != 1 || inet_pton(AF_INET, dst_s, &dst) != 1)
        usage("bad --src or --dst");
    if (!in_net(ntohl(src.s_addr), NET_HOSTS) || !in_net(ntohl(dst.s_addr), NET_HOSTS))
        usage("--src and --dst must be in 10.201.0.0/16");
    uint8_t dst_mac[6], payload[PAYLOAD_MAX];
    if (sscanf(dst_mac_s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &dst_mac[0], &dst_mac[1],
               &dst_mac[2], &dst_mac[3], &dst_mac[4], &dst_mac[5]) != 6)
        usage("bad --dst-mac");
    size_t payload_len = parse_hex(hex, payload);
    int knock_tcp = !strcmp(proto, "tcp");
    if (knock_tcp && payload_len)
        usage("--payload-hex is for udp knocks");
    srand((unsigned)now_ns(CLOCK_MONOTONIC) ^ (unsigned)getpid());
    prctl(PR_SET_TIMERSLACK, 1UL); /* sleeps between probes end on time */
    /* The flooder shares the client's core: at normal priority it could hold the core for a
     * whole scheduler slice (milliseconds) between two probes. The probe sleeps between
     * probes and stops at its deadline, so real-time priority costs the flooder little. */
    struct sched_param realtime = {.sched_priority = 1};
    int is_realtime = sched_setscheduler(0, SCHED_FIFO, &realtime) == 0;

    int rx = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    int tx = socket(AF_PACKET, SOCK_RAW, 0); /* a second socket: rx sees what tx sends */
    if (rx < 0 || tx < 0)
        die("socket(AF_PACKET)");
    int ifindex;
    uint8_t src_mac[6];
    const char *failed = interface_of(tx, iface, &ifindex, src_mac);
    if (failed)
        die(failed);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                              .sll_ifindex = ifindex};
    if (bind(rx, (struct sockaddr *)&sll, sizeof sll) < 0)
        die("bind rx");
    sll.sll_protocol = htons(ETH_P_IP);
    if (bind(tx, (struct sockaddr *)&sll, sizeof sll) < 0)
        die("bind tx");
    int one = 1;
    if (setsockopt(rx, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0)
        die("SO_TIMESTAMPNS");
    attach_filter(rx, ntohl(src.s_addr));

    struct frame knock, probe;
    build(&knock, dst_mac, src_mac, src.s_addr, dst.s_addr, knock_tcp,
          (uint16_t)(32768 + rand() % 28000), (uint16_t)knock_port, payload, payload_len);
    if (at_ns > 0) {
        struct timespec when = {at_ns / 1000000000, at_ns % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &when, NULL) == EINTR)
            ;
    }
    const int64_t before = now_ns(CLOCK_REALTIME);
    if (send(tx, knock.bytes, knock.len, 0) < 0)
        die("send knock");
    const int64_t after = now_ns(CLOCK_REALTIME);
    const int64_t start = now_ns(CLOCK_MONOTONIC), end = start + (int64_t)(deadline_ms * 1e6);
    int64_t knock_at = -1, accept_at = -1, next_probe = start;
    unsigned probes = 0;
    for (int64_t now = start; now < end && accept_at < 0; now = now_ns(CLOCK_MONOTONIC)) {
        if (now >= next_probe) {
            build(&probe, dst_mac, src_mac, src.s_addr, dst.s_addr, 1,
                  (uint16_t)(32768 + (probes % 28000)), (uint16_t)port, NULL, 0);
            if (send(tx, probe.bytes, probe.len, 0) < 0 && errno != ENOBUFS)
                die("send probe");
            probes++;
            next_probe = now + probe_gap_ns(now - start);
        }
        int64_t stamp;
        enum seen what;
        while ((what = classify(rx, &knock, dst.s_addr, (uint16_t)port, &stamp)) != SEEN_NOTHING
               || stamp >= 0) {
            if (what == SEEN_KNOCK && knock_at < 0)
                knock_at = stamp;
            else if (what == SEEN_ACCEPT && knock_at >= 0)
                accept_at = stamp;
            if (accept_at >= 0)
                break;
        }
        if (accept_at < 0) {
            struct pollfd p = {rx, POLLIN, 0};
            int64_t wait = next_probe - now_ns(CLOCK_MONOTONIC);
            struct timespec ts = {0, wait > 0 ? wait : 0};
            ppoll(&p, 1, &ts, NULL);
        }
    }
    if (knock_at < 0) {
        fprintf(stderr, "probe: never saw the knock leave %s\n", iface);
        return 1;
    }
    if (knock_at < before || knock_at > after) {
        /* The kernel turns timestamping on lazily (a deferred static key): the stamp was
         * taken when we read the frame, not when it left. The harness keeps it on. */
        fprintf(stderr, "probe: the knock's timestamp is not from its send(); keep a socket "
                "with SO_TIMESTAMPNS open while probing\n");
        return 1;
    }
    if (accept_at < 0)
        printf("{\"ms\": null, \"probes\": %u, \"knock_ns\": %lld, \"realtime\": %s}\n",
               probes, (long long)knock_at, is_realtime ? "true" : "false");
    else
        printf("{\"ms\": %.4f, \"probes\": %u, \"knock_ns\": %lld, \"realtime\": %s}\n",
               (accept_at - knock_at) / 1e6, probes, (long long)knock_at,
               is_realtime ? "true" : "false");
    return 0;
}
