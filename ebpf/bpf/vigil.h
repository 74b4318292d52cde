/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layouts shared by the eBPF programs (vigil.bpf.c) and their reader
 * (src/layout.rs mirrors every struct with #[repr(C)]; a test compares the
 * sizes against the map definitions in the object).
 */
#ifndef VIGIL_BPF_H
#define VIGIL_BPF_H

/*
 * Latency histograms: slot s (0 <= s < HIST_SLOTS - 1) counts events that
 * took less than 2^s microseconds and at least 2^(s-1); the last slot
 * counts everything longer than 2^(HIST_SLOTS - 2) microseconds (33.5 s).
 */
#define HIST_SLOTS 27

struct hist {
	__u64 slots[HIST_SLOTS];
	__u64 count;
	__u64 sum_ns;
	__u64 errors;
};

/* Operations of the syscall histograms (key.op). */
#define SYS_OP_READ 0
#define SYS_OP_WRITE 1
#define SYS_OP_FSYNC 2

/* Operations of the block histograms (key.op). */
#define BLK_OP_READ 0
#define BLK_OP_WRITE 1
#define BLK_OP_FLUSH 2
#define BLK_OP_DISCARD 3
#define BLK_OP_OTHER 4

/* Key of the syscall histograms: a vigil disk (index given by the agent). */
struct sys_key {
	__u32 disk;
	__u32 op;
};

/* A syscall in flight on one thread. */
struct sys_start {
	__u64 ts;
	__u32 disk;
	__u32 op;
};

/* Key of the block histograms: kernel dev_t (MAJOR << 20 | MINOR). */
struct blk_key {
	__u32 dev;
	__u32 op;
};

/* A block request in flight (blk_inflight, keyed by the request's address). */
struct rq_start {
	__u64 ts;
	__u32 op;
	__u32 dev;
};

/* An agent thread's scheduler wait figures when it last gave up a CPU
 * (runq_seen, task storage). */
struct runq_seen {
	__u64 run_delay;
	__u64 slices;
};

/* Per-device counters (issued and completed only for tracked requests). */
struct dev_stats {
	__u64 issued;
	__u64 completed;
	__u64 errors;
};

/* A replica server the agent talks to: IPv4 address (network order as in
 * memory) and port (host order, as the tcp tracepoints give it). */
struct peer_key {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

struct peer_stats {
	struct hist rtt;
	__u64 retransmits;
};

#endif
