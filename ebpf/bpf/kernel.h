/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel structure fields the programs read, declared by hand as
 * CO-RE views: preserve_access_index makes clang record each access by
 * name, and the loader (aya) rewrites the offsets against the running
 * kernel's BTF (/sys/kernel/btf/vmlinux) before loading. Only the fields
 * named here are read; their order and the missing ones do not matter.
 * Written for this project (no generated vmlinux.h is committed: it would
 * pin one kernel's layout and weigh megabytes).
 */
#ifndef VIGIL_KERNEL_H
#define VIGIL_KERNEL_H

#define CORE __attribute__((preserve_access_index))

/* The scheduler's own accounting of a task's waits (CONFIG_SCHED_INFO):
 * run_delay is the total time it spent runnable but not running, pcount
 * the number of times it got a CPU. */
struct sched_info {
	unsigned long pcount;
	unsigned long long run_delay;
} CORE;

struct task_struct {
	int pid;
	int tgid;
	struct sched_info sched_info;
} CORE;

/* x86-64 register frame: the syscall's first argument is in di, its
 * number in orig_ax. */
struct pt_regs {
	unsigned long di;
	unsigned long orig_ax;
} CORE;

struct gendisk {
	int major;
	int first_minor;
} CORE;

struct request_queue {
	struct gendisk *disk;
} CORE;

struct request {
	struct request_queue *q;
	unsigned int cmd_flags;
} CORE;

/* The addresses live in anonymous unions in the kernel; the loader finds
 * a field through anonymous members by its name. */
struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
} CORE;

struct sock {
	struct sock_common __sk_common;
} CORE;

struct tcp_sock {
	__u32 srtt_us;
} CORE;

/* io_uring: a request's opcode and, from submission until the kernel
 * fills in the completion, the fd its SQE named (an anonymous union with
 * the completion flags). */
struct io_cqe {
	int fd;
} CORE;

struct io_kiocb {
	__u8 opcode;
	struct io_cqe cqe;
} CORE;

struct io_uring_cqe {
	__s32 res;
} CORE;

#endif
