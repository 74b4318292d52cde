// SPDX-License-Identifier: GPL-2.0
/*
 * vigil's eBPF programs: what the kernel sees of the agent's replica I/O.
 * Tracepoints only (kprobes and fentry are not available everywhere vigil
 * runs). Everything is filtered in the kernel to vigil's own work and
 * aggregated into maps the agent reads at scrape: nothing is streamed.
 *
 * Build (what tests/run.sh checks against the committed object):
 *   clang-14 -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu \
 *     -c ebpf/bpf/vigil.bpf.c -o ebpf/bpf/vigil.bpf.o
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "vigil.h"

char LICENSE[] SEC("license") = "GPL";

/* ---- maps the agent writes (filters) ---- */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

/* The agent's open replica files: fd -> disk index. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} fd_disk SEC(".maps");

/* Devices holding vigil disks: an entry (zeroed by the agent) enables
 * tracing of the device and holds its counters. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct dev_stats);
} blk_devs SEC(".maps");

/* Replica servers this agent connects to: an entry (zeroed by the agent)
 * enables tracing of the connection and holds its figures. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct peer_key);
	__type(value, struct peer_stats);
} tcp_peers SEC(".maps");

/* ---- maps the programs write ---- */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct sys_key);
	__type(value, struct hist);
} sys_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct sys_start);
} sys_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1280);
	__type(key, struct blk_key);
	__type(value, struct hist);
} blk_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct rq_key);
	__type(value, struct rq_start);
} blk_inflight SEC(".maps");

/* Thread ids of the agent, learned when one is switched out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} agent_tids SEC(".maps");

/* When an agent thread became runnable (deleted when it runs; a plain
 * hash: cheaper than an LRU on this hot path). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} runq_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hist);
} runq_hist SEC(".maps");

/* ---- helpers ---- */

static __always_inline __u32 agent_tgid(void)
{
	__u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config, &zero);
	return c ? c->tgid : 0;
}

/* Histogram slot of a duration: floor(log2(us)) + 1, 0 below 1 us. */
static __always_inline __u32 slot_of(__u64 ns)
{
	__u64 us = ns / 1000;
	__u32 s = 0;
	if (us == 0)
		return 0;
	if (us >> 32) { s += 32; us >>= 32; }
	if (us >> 16) { s += 16; us >>= 16; }
	if (us >> 8) { s += 8; us >>= 8; }
	if (us >> 4) { s += 4; us >>= 4; }
	if (us >> 2) { s += 2; us >>= 2; }
	if (us >> 1) { s += 1; }
	s += 1;
	if (s > HIST_SLOTS - 1)
		s = HIST_SLOTS - 1;
	return s;
}

static __always_inline void hist_add(struct hist *h, __u64 ns, int error)
{
	__u32 s = slot_of(ns);
	if (s >= HIST_SLOTS)
		return;
	__sync_fetch_and_add(&h->slots[s], 1);
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum_ns, ns);
	if (error)
		__sync_fetch_and_add(&h->errors, 1);
}

/* The histogram under key in map, created empty when missing. */
static __always_inline struct hist *hist_get(void *map, const void *key)
{
	struct hist *h = bpf_map_lookup_elem(map, key);
	if (h)
		return h;
	struct hist zero = {};
	bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

/* ---- syscalls on replica files ---- */

/* syscalls/sys_enter_*: common header, syscall nr, then the arguments. */
struct sys_enter_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 args[6];
};

struct sys_exit_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

static __always_inline int sys_enter(struct sys_enter_ctx *ctx, __u32 op)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = agent_tgid();
	if (tgid == 0 || (id >> 32) != tgid)
		return 0;
	__u32 fd = (__u32)ctx->args[0];
	__u32 *disk = bpf_map_lookup_elem(&fd_disk, &fd);
	if (!disk)
		return 0;
	struct sys_start st = { .ts = bpf_ktime_get_ns(), .disk = *disk, .op = op };
	bpf_map_update_elem(&sys_inflight, &id, &st, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_pread64")
int sys_enter_read(struct sys_enter_ctx *ctx)
{
	return sys_enter(ctx, SYS_OP_READ);
}

SEC("tracepoint/syscalls/sys_enter_pwrite64")
int sys_enter_write(struct sys_enter_ctx *ctx)
{
	return sys_enter(ctx, SYS_OP_WRITE);
}

SEC("tracepoint/syscalls/sys_enter_fdatasync")
int sys_enter_fsync(struct sys_enter_ctx *ctx)
{
	return sys_enter(ctx, SYS_OP_FSYNC);
}

/* One exit program for every traced syscall: the start says what it was. */
SEC("tracepoint/syscalls/sys_exit_pread64")
int sys_exit(struct sys_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct sys_start *st = bpf_map_lookup_elem(&sys_inflight, &id);
	if (!st)
		return 0;
	__u64 delta = bpf_ktime_get_ns() - st->ts;
	struct sys_key key = { .disk = st->disk, .op = st->op };
	bpf_map_delete_elem(&sys_inflight, &id);
	struct hist *h = hist_get(&sys_hist, &key);
	if (h)
		hist_add(h, delta, ctx->ret < 0);
	return 0;
}

/* ---- block requests on devices holding vigil disks ---- */

struct block_rq_issue_ctx {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 sector;
	__u32 nr_sector;
	__u32 bytes;
	__u16 ioprio;
	char rwbs[10];
};

struct block_rq_complete_ctx {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 sector;
	__u32 nr_sector;
	__s32 error;
	__u16 ioprio;
	char rwbs[10];
};

/* rwbs: an optional 'F' (preflush), then the op: W, R, D (discard),
 * F (flush), N (none), ... */
static __always_inline __u32 blk_op(const char *rwbs)
{
	char c = rwbs[0];
	char n = rwbs[1];
	if (c == 'F' && (n == 'W' || n == 'R' || n == 'D' || n == 'F' || n == 'N'))
		c = n;
	switch (c) {
	case 'R':
		return BLK_OP_READ;
	case 'W':
		return BLK_OP_WRITE;
	case 'F':
		return BLK_OP_FLUSH;
	case 'D':
		return BLK_OP_DISCARD;
	default:
		return BLK_OP_OTHER;
	}
}

SEC("tracepoint/block/block_rq_issue")
int block_rq_issue(struct block_rq_issue_ctx *ctx)
{
	__u32 dev = ctx->dev;
	struct dev_stats *ds = bpf_map_lookup_elem(&blk_devs, &dev);
	if (!ds)
		return 0;
	struct rq_key key = { .sector = ctx->sector, .dev = dev };
	struct rq_start st = { .ts = bpf_ktime_get_ns(), .op = blk_op(ctx->rwbs) };
	/* A requeued request is issued again: count it once. */
	if (bpf_map_update_elem(&blk_inflight, &key, &st, BPF_NOEXIST) == 0)
		__sync_fetch_and_add(&ds->issued, 1);
	else
		bpf_map_update_elem(&blk_inflight, &key, &st, BPF_EXIST);
	return 0;
}

SEC("tracepoint/block/block_rq_complete")
int block_rq_complete(struct block_rq_complete_ctx *ctx)
{
	__u32 dev = ctx->dev;
	struct dev_stats *ds = bpf_map_lookup_elem(&blk_devs, &dev);
	if (!ds)
		return 0;
	struct rq_key key = { .sector = ctx->sector, .dev = dev };
	struct rq_start *st = bpf_map_lookup_elem(&blk_inflight, &key);
	if (!st)
		return 0;
	__u64 delta = bpf_ktime_get_ns() - st->ts;
	struct blk_key hk = { .dev = dev, .op = st->op };
	bpf_map_delete_elem(&blk_inflight, &key);
	__sync_fetch_and_add(&ds->completed, 1);
	if (ctx->error)
		__sync_fetch_and_add(&ds->errors, 1);
	struct hist *h = hist_get(&blk_hist, &hk);
	if (h)
		hist_add(h, delta, ctx->error != 0);
	return 0;
}

/* ---- TCP on replica connections ---- */

#define AF_INET 2

struct tcp_retransmit_ctx {
	__u64 common;
	__u64 skbaddr;
	__u64 skaddr;
	__s32 state;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 saddr[4];
	__u8 daddr[4];
};

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tcp_retransmit(struct tcp_retransmit_ctx *ctx)
{
	if (ctx->family != AF_INET)
		return 0;
	struct peer_key key = { .port = ctx->dport };
	__builtin_memcpy(&key.addr, ctx->daddr, 4);
	struct peer_stats *ps = bpf_map_lookup_elem(&tcp_peers, &key);
	if (ps)
		__sync_fetch_and_add(&ps->retransmits, 1);
	return 0;
}

struct tcp_probe_ctx {
	__u64 common;
	__u8 saddr[28];
	__u8 daddr[28];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 pad;
	__u32 mark;
	__u16 data_len;
	__u16 pad2;
	__u32 snd_nxt;
	__u32 snd_una;
	__u32 snd_cwnd;
	__u32 ssthresh;
	__u32 snd_wnd;
	__u32 srtt;
};

SEC("tracepoint/tcp/tcp_probe")
int tcp_probe(struct tcp_probe_ctx *ctx)
{
	if (ctx->family != AF_INET)
		return 0;
	/* daddr is a struct sockaddr_in: family, port, then the address. */
	struct peer_key key = { .port = ctx->dport };
	__builtin_memcpy(&key.addr, &ctx->daddr[4], 4);
	struct peer_stats *ps = bpf_map_lookup_elem(&tcp_peers, &key);
	if (ps)
		hist_add(&ps->rtt, (__u64)ctx->srtt * 1000, 0);
	return 0;
}

/* ---- run-queue delay of the agent's threads ---- */

struct sched_wakeup_ctx {
	__u64 common;
	char comm[16];
	__s32 pid;
	__s32 prio;
	__s32 target_cpu;
};

struct sched_switch_ctx {
	__u64 common;
	char prev_comm[16];
	__s32 prev_pid;
	__s32 prev_prio;
	__s64 prev_state;
	char next_comm[16];
	__s32 next_pid;
	__s32 next_prio;
};

static __always_inline int wakeup(struct sched_wakeup_ctx *ctx)
{
	__u32 tid = ctx->pid;
	if (!bpf_map_lookup_elem(&agent_tids, &tid))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	bpf_map_update_elem(&runq_start, &tid, &now, BPF_ANY);
	return 0;
}

SEC("tracepoint/sched/sched_wakeup")
int sched_wakeup(struct sched_wakeup_ctx *ctx)
{
	return wakeup(ctx);
}

SEC("tracepoint/sched/sched_wakeup_new")
int sched_wakeup_new(struct sched_wakeup_ctx *ctx)
{
	return wakeup(ctx);
}

SEC("tracepoint/sched/sched_switch")
int sched_switch(struct sched_switch_ctx *ctx)
{
	__u32 tgid = agent_tgid();
	if (tgid == 0)
		return 0;
	/* The tracepoint runs on the outgoing task: prev is current. */
	if ((bpf_get_current_pid_tgid() >> 32) == tgid) {
		__u32 prev = ctx->prev_pid;
		/* Learn the thread once: an LRU update costs far more than a
		 * lookup, and this runs on every switch of an agent thread. */
		if (!bpf_map_lookup_elem(&agent_tids, &prev)) {
			__u8 one = 1;
			bpf_map_update_elem(&agent_tids, &prev, &one, BPF_ANY);
		}
		/* Preempted while runnable (no sleep bits; 0x100 = preempted):
		 * it waits in the run queue from now on. */
		if ((ctx->prev_state & 0xff) == 0) {
			__u64 now = bpf_ktime_get_ns();
			bpf_map_update_elem(&runq_start, &prev, &now, BPF_ANY);
		}
	}
	__u32 next = ctx->next_pid;
	__u64 *ts = bpf_map_lookup_elem(&runq_start, &next);
	if (!ts)
		return 0;
	__u64 delta = bpf_ktime_get_ns() - *ts;
	bpf_map_delete_elem(&runq_start, &next);
	__u32 zero = 0;
	struct hist *h = bpf_map_lookup_elem(&runq_hist, &zero);
	if (h)
		hist_add(h, delta, 0);
	return 0;
}
