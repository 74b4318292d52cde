// SPDX-License-Identifier: GPL-2.0
/*
 * vigil's eBPF programs: what the kernel sees of the agent's replica I/O.
 *
 * Every program is a BTF tracepoint (tp_btf): the kernel calls it directly
 * with the tracepoint's arguments, without formatting a trace record, and
 * it needs no tracefs. That matters because sched_switch, tcp_probe and
 * the raw syscall tracepoints fire for the whole machine:
 * each program first rejects what is not vigil's with a compare against a
 * constant (the agent's tgid is set in .rodata before loading), and only
 * vigil's own events touch a map. Per-thread state (a syscall or a wait
 * in progress) lives in task storage rather than in hashes keyed by
 * thread id. Histograms are per-CPU, so counting
 * never bounces a cache line between CPUs. Nothing is streamed: the agent
 * reads the maps at scrape.
 *
 * Kernel structures are read through the CO-RE views in kernel.h, with
 * plain loads where the verifier knows the pointer's type (tracepoint
 * arguments and what they point to) and bpf_probe_read_kernel otherwise.
 *
 * Build (what tests/run.sh checks against the committed object):
 *   clang-14 -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu \
 *     -c ebpf/bpf/vigil.bpf.c -o ebpf/bpf/vigil.bpf.o
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "kernel.h"
#include "vigil.h"

char LICENSE[] SEC("license") = "GPL";

/* ---- constants the loader sets (frozen .rodata: the verifier sees them) ---- */

/* The agent's process id; 0 traces nothing per process. */
const volatile __u32 agent_tgid = 0;

/* Syscall numbers of this architecture (the loader passes libc's); -1
 * never matches. */
const volatile __s64 nr_pread64 = -1;
const volatile __s64 nr_preadv = -1;
const volatile __s64 nr_preadv2 = -1;
const volatile __s64 nr_pwrite64 = -1;
const volatile __s64 nr_pwritev = -1;
const volatile __s64 nr_pwritev2 = -1;
const volatile __s64 nr_fsync = -1;
const volatile __s64 nr_fdatasync = -1;

/* ---- maps the agent writes (filters) ---- */

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

/* io_uring requests on replica files in flight, by request address (the
 * completion may run anywhere: in an interrupt's task work, an io-wq
 * worker). LRU: a request whose completion was never seen cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct sys_start);
} uring_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct sys_key);
	__type(value, struct hist);
} sys_hist SEC(".maps");

/* The traced syscall in flight on an agent thread, in the thread's own
 * task storage (ts = 0 when none): no hash on the path, and it goes away
 * with the thread. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sys_start);
} sys_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1280);
	__type(key, struct blk_key);
	__type(value, struct hist);
} blk_hist SEC(".maps");

/* Block requests in flight on traced devices, by request address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct rq_start);
} blk_inflight SEC(".maps");

/* The scheduler's wait figures of an agent thread when it last gave up a
 * CPU, in its task storage. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct runq_seen);
} runq_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hist);
} runq_hist SEC(".maps");

/* ---- helpers ---- */

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

/* Adds n events that took ns in all to a per-CPU histogram (this CPU's
 * copy). Plain adds: tracepoint programs run with preemption off, and
 * each per-CPU histogram map is written by one program only, which never
 * nests with itself (the kernel skips a nested run), so nothing else
 * writes this copy meanwhile. */
static __always_inline void hist_add_n(struct hist *h, __u64 ns, __u64 n, int error)
{
	__u32 s = slot_of(n > 1 ? ns / n : ns);
	if (s >= HIST_SLOTS)
		return;
	h->slots[s] += n;
	h->count += n;
	h->sum_ns += ns;
	if (error)
		h->errors += 1;
}

static __always_inline void hist_add(struct hist *h, __u64 ns, int error)
{
	hist_add_n(h, ns, 1, error);
}

/* The same for a histogram shared between CPUs (in a plain hash). */
static __always_inline void hist_add_shared(struct hist *h, __u64 ns)
{
	__u32 s = slot_of(ns);
	if (s >= HIST_SLOTS)
		return;
	__sync_fetch_and_add(&h->slots[s], 1);
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum_ns, ns);
}

/* The histogram under key in map (this CPU's copy for per-CPU maps),
 * created empty when missing. */
static __always_inline struct hist *hist_get(void *map, const void *key)
{
	struct hist *h = bpf_map_lookup_elem(map, key);
	if (h)
		return h;
	struct hist zero = {};
	bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

/* ---- syscalls on replica files (raw syscall tracepoints) ---- */

/* The family of a traced syscall, or -1. */
static __always_inline int sys_op(long nr)
{
	if (nr == nr_pwrite64 || nr == nr_pwritev || nr == nr_pwritev2)
		return SYS_OP_WRITE;
	if (nr == nr_pread64 || nr == nr_preadv || nr == nr_preadv2)
		return SYS_OP_READ;
	if (nr == nr_fdatasync || nr == nr_fsync)
		return SYS_OP_FSYNC;
	return -1;
}

/* sys_enter(struct pt_regs *regs, long id) */
SEC("tp_btf/sys_enter")
int sys_enter(__u64 *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) != agent_tgid || agent_tgid == 0)
		return 0;
	int op = sys_op((long)ctx[1]);
	if (op < 0)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	__u32 fd = (__u32)regs->di;
	__u32 *disk = bpf_map_lookup_elem(&fd_disk, &fd);
	if (!disk)
		return 0;
	struct sys_start *st = bpf_task_storage_get(&sys_inflight, bpf_get_current_task_btf(), 0,
						    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st)
		return 0;
	st->disk = *disk;
	st->op = op;
	st->ts = bpf_ktime_get_ns();
	return 0;
}

/* sys_exit(struct pt_regs *regs, long ret) */
SEC("tp_btf/sys_exit")
int sys_exit(__u64 *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) != agent_tgid || agent_tgid == 0)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	if (sys_op((long)regs->orig_ax) < 0)
		return 0;
	struct sys_start *st = bpf_task_storage_get(&sys_inflight, bpf_get_current_task_btf(), 0, 0);
	if (!st || st->ts == 0)
		return 0;
	__u64 delta = bpf_ktime_get_ns() - st->ts;
	struct sys_key key = { .disk = st->disk, .op = st->op };
	st->ts = 0;
	struct hist *h = hist_get(&sys_hist, &key);
	if (h)
		hist_add(h, delta, (long)ctx[1] < 0);
	return 0;
}

/* ---- io_uring requests on replica files ---- */

/* IORING_OP_* (include/uapi/linux/io_uring.h), stable ABI numbers. */
#define IORING_OP_READV 1
#define IORING_OP_WRITEV 2
#define IORING_OP_FSYNC 3
#define IORING_OP_READ_FIXED 4
#define IORING_OP_WRITE_FIXED 5
#define IORING_OP_READ 22
#define IORING_OP_WRITE 23

/* The family of an io_uring opcode, or -1: the agent's reads, writes and
 * syncs of replica files go through io_uring when the kernel allows it,
 * past the pread/pwrite/fdatasync syscalls above, and land in the same
 * histograms. */
static __always_inline int uring_op(__u8 opcode)
{
	if (opcode == IORING_OP_WRITE || opcode == IORING_OP_WRITEV || opcode == IORING_OP_WRITE_FIXED)
		return SYS_OP_WRITE;
	if (opcode == IORING_OP_READ || opcode == IORING_OP_READV || opcode == IORING_OP_READ_FIXED)
		return SYS_OP_READ;
	if (opcode == IORING_OP_FSYNC)
		return SYS_OP_FSYNC;
	return -1;
}

/* io_uring_submit_req(struct io_kiocb *req): runs in the submitting task. */
SEC("tp_btf/io_uring_submit_req")
int uring_submit(__u64 *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) != agent_tgid || agent_tgid == 0)
		return 0;
	struct io_kiocb *req = (struct io_kiocb *)ctx[0];
	int op = uring_op(req->opcode);
	if (op < 0)
		return 0;
	__u32 fd = (__u32)req->cqe.fd;
	__u32 *disk = bpf_map_lookup_elem(&fd_disk, &fd);
	if (!disk)
		return 0;
	__u64 key = (__u64)req;
	struct sys_start st = { .ts = bpf_ktime_get_ns(), .disk = *disk, .op = op };
	bpf_map_update_elem(&uring_inflight, &key, &st, BPF_ANY);
	return 0;
}

/* io_uring_complete(struct io_ring_ctx *ctx, void *req, struct io_uring_cqe *cqe) */
SEC("tp_btf/io_uring_complete")
int uring_complete(__u64 *ctx)
{
	__u64 key = ctx[1];
	struct sys_start *st = bpf_map_lookup_elem(&uring_inflight, &key);
	if (!st)
		return 0;
	struct io_uring_cqe *cqe = (struct io_uring_cqe *)ctx[2];
	__s32 res = cqe->res;
	__u64 delta = bpf_ktime_get_ns() - st->ts;
	struct sys_key hk = { .disk = st->disk, .op = st->op };
	bpf_map_delete_elem(&uring_inflight, &key);
	struct hist *h = hist_get(&sys_hist, &hk);
	if (h)
		hist_add(h, delta, res < 0);
	return 0;
}

/* ---- block requests on devices holding vigil disks ---- */

/* REQ_OP_* (include/linux/blk_types.h): the low 8 bits of cmd_flags. */
static __always_inline __u32 blk_op(unsigned int cmd_flags)
{
	switch (cmd_flags & 0xff) {
	case 0: /* REQ_OP_READ */
		return BLK_OP_READ;
	case 1: /* REQ_OP_WRITE */
	case 9: /* REQ_OP_WRITE_ZEROES */
		return BLK_OP_WRITE;
	case 2: /* REQ_OP_FLUSH */
		return BLK_OP_FLUSH;
	case 3: /* REQ_OP_DISCARD */
	case 5: /* REQ_OP_SECURE_ERASE */
		return BLK_OP_DISCARD;
	default:
		return BLK_OP_OTHER;
	}
}

/* block_rq_issue(struct request *rq) */
SEC("tp_btf/block_rq_issue")
int block_rq_issue(__u64 *ctx)
{
	struct request *rq = (struct request *)ctx[0];
	struct gendisk *disk = rq->q->disk;
	if (!disk)
		return 0;
	/* The kernel's dev_t: MAJOR << 20 | MINOR. */
	__u32 dev = ((__u32)disk->major << 20) | ((__u32)disk->first_minor & 0xfffff);
	struct dev_stats *ds = bpf_map_lookup_elem(&blk_devs, &dev);
	if (!ds)
		return 0;
	__u64 key = (__u64)rq;
	struct rq_start st = {
		.ts = bpf_ktime_get_ns(),
		.op = blk_op(rq->cmd_flags),
		.dev = dev,
	};
	/* A requeued request is issued again: count it once. */
	if (bpf_map_update_elem(&blk_inflight, &key, &st, BPF_NOEXIST) == 0)
		__sync_fetch_and_add(&ds->issued, 1);
	else
		bpf_map_update_elem(&blk_inflight, &key, &st, BPF_EXIST);
	return 0;
}

/* block_rq_complete(struct request *rq, blk_status_t error, unsigned int nr_bytes) */
SEC("tp_btf/block_rq_complete")
int block_rq_complete(__u64 *ctx)
{
	__u64 key = ctx[0];
	struct rq_start *st = bpf_map_lookup_elem(&blk_inflight, &key);
	if (!st)
		return 0;
	__u8 error = (__u8)ctx[1];
	__u64 delta = bpf_ktime_get_ns() - st->ts;
	struct blk_key hk = { .dev = st->dev, .op = st->op };
	bpf_map_delete_elem(&blk_inflight, &key);
	struct dev_stats *ds = bpf_map_lookup_elem(&blk_devs, &hk.dev);
	if (ds) {
		__sync_fetch_and_add(&ds->completed, 1);
		if (error)
			__sync_fetch_and_add(&ds->errors, 1);
	}
	struct hist *h = hist_get(&blk_hist, &hk);
	if (h)
		hist_add(h, delta, error != 0);
	return 0;
}

/* ---- TCP on replica connections ---- */

#define AF_INET 2

/* The peer of an IPv4 socket, as the agent keys it (address as in memory,
 * port in host order). */
static __always_inline int peer_of(const struct sock *sk, struct peer_key *key)
{
	if (sk->__sk_common.skc_family != AF_INET)
		return -1;
	key->addr = sk->__sk_common.skc_daddr;
	key->port = bpf_ntohs(sk->__sk_common.skc_dport);
	key->pad = 0;
	return 0;
}

/* tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int reason) */
SEC("tp_btf/tcp_retransmit_skb")
int tcp_retransmit(__u64 *ctx)
{
	struct peer_key key;
	if (peer_of((const struct sock *)ctx[0], &key) < 0)
		return 0;
	struct peer_stats *ps = bpf_map_lookup_elem(&tcp_peers, &key);
	if (ps)
		__sync_fetch_and_add(&ps->retransmits, 1);
	return 0;
}

/* tcp_probe(struct sock *sk, const struct sk_buff *skb): every segment
 * received on an established connection of the machine. */
SEC("tp_btf/tcp_probe")
int tcp_probe(__u64 *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];
	struct peer_key key;
	if (peer_of(sk, &key) < 0)
		return 0;
	struct peer_stats *ps = bpf_map_lookup_elem(&tcp_peers, &key);
	if (!ps)
		return 0;
	/* srtt_us holds 8 times the smoothed RTT in microseconds. */
	__u32 srtt = BPF_CORE_READ((const struct tcp_sock *)sk, srtt_us) >> 3;
	hist_add_shared(&ps->rtt, (__u64)srtt * 1000);
	return 0;
}

/* ---- run-queue delay of the agent's threads ---- */

/*
 * The scheduler already measures every task's waits (sched_info: total
 * run_delay and pcount, the number of times it got a CPU), so no wakeup
 * needs tracing and no clock is read here: when an agent thread gives up
 * a CPU, the growth of its run_delay since it last did is the wait that
 * preceded the time slice now ending (pcount grows by one per slice; by
 * more, the waits are counted at their mean). Other tasks' switches cost
 * one compare.
 */

/* sched_switch(bool preempt, struct task_struct *prev,
 *              struct task_struct *next, unsigned int prev_state) */
SEC("tp_btf/sched_switch")
int sched_switch(__u64 *ctx)
{
	struct task_struct *prev = (struct task_struct *)ctx[1];
	if (agent_tgid == 0 || prev->tgid != agent_tgid)
		return 0;
	__u64 delay = prev->sched_info.run_delay;
	__u64 slices = prev->sched_info.pcount;
	struct runq_seen *seen = bpf_task_storage_get(&runq_seen, prev, 0,
						      BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!seen)
		return 0;
	if (seen->slices != 0 && slices > seen->slices && delay >= seen->run_delay) {
		__u32 zero = 0;
		struct hist *h = bpf_map_lookup_elem(&runq_hist, &zero);
		if (h)
			hist_add_n(h, delay - seen->run_delay, slices - seen->slices, 0);
	}
	seen->run_delay = delay;
	seen->slices = slices;
	return 0;
}
