// SPDX-License-Identifier: GPL-2.0
/*
 * heartbeat CPU -- COMMAND [ARGS...]
 *
 * Runs COMMAND pinned to CPU and, pinned to the same CPU, wakes up every millisecond until
 * COMMAND ends, measuring the longest gap between wake-ups: how long the CPU was kept from
 * a runnable task. Proves that a guest running on that CPU (whatever it does with its
 * interrupts) leaves the host answering. Prints
 *   # heartbeat: max gap <us> us, <n> wake-ups, command status <s>
 * and exits with COMMAND's exit status (128 + signal if it was killed).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		perror("heartbeat: sched_setaffinity");
		exit(127);
	}
}

int main(int argc, char **argv)
{
	if (argc < 4 || argv[2][0] != '-' || argv[2][1] != '-') {
		fprintf(stderr, "usage: heartbeat CPU -- COMMAND [ARGS...]\n");
		return 127;
	}
	int cpu = atoi(argv[1]);
	pid_t pid = fork();
	if (pid < 0) {
		perror("heartbeat: fork");
		return 127;
	}
	if (pid == 0) {
		pin(cpu);
		execv(argv[3], argv + 3);
		perror("heartbeat: exec");
		_exit(127);
	}
	pin(cpu);
	long long last = now_ns(), max_gap = 0, wakeups = 0;
	int status = 0;
	for (;;) {
		struct timespec ms = { 0, 1000000 };
		nanosleep(&ms, NULL);
		long long t = now_ns();
		if (t - last > max_gap)
			max_gap = t - last;
		last = t;
		wakeups++;
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r < 0) {
			perror("heartbeat: waitpid");
			return 127;
		}
	}
	int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	printf("# heartbeat: max gap %lld us, %lld wake-ups, command status %d\n", max_gap / 1000,
	       wakeups, rc);
	return rc;
}
