// SPDX-License-Identifier: GPL-2.0
/*
 * pipe: two processes bounce a counter through a pair of pipes (each side checks the value
 * it gets and sends it on incremented: every round trip is two switches between address
 * spaces), then one streams a pattern to the other in odd-sized writes that the reader
 * checks word by word.
 */
#include <stdio.h>
#include <unistd.h>

#include "lt.h"

static bool read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n <= 0)
			return false;
		p += n;
		len -= n;
	}
	return true;
}

static bool write_full(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n <= 0)
			return false;
		p += n;
		len -= n;
	}
	return true;
}

static bool ping_pong(unsigned trips)
{
	int to_child[2], to_parent[2];

	if (pipe(to_child) < 0 || pipe(to_parent) < 0)
		die_errno("pipe");
	pid_t pid = xfork();

	if (pid == 0) {
		close(to_child[1]);
		close(to_parent[0]);
		for (uint64_t want = 0; want < 2ULL * trips; want += 2) {
			uint64_t v;

			if (!read_full(to_child[0], &v, sizeof(v)))
				_exit(2);
			if (v != want) {
				diag("child got %llu, expected %llu", (unsigned long long)v,
				     (unsigned long long)want);
				_exit(1);
			}
			v++;
			if (!write_full(to_parent[1], &v, sizeof(v)))
				_exit(2);
		}
		_exit(0);
	}
	close(to_child[0]);
	close(to_parent[1]);
	bool ok = true;

	for (uint64_t v = 0; ok && v < 2ULL * trips; v += 2) {
		uint64_t back;

		ok = write_full(to_child[1], &v, sizeof(v)) &&
		     read_full(to_parent[0], &back, sizeof(back));
		if (ok && back != v + 1) {
			diag("parent got %llu, expected %llu", (unsigned long long)back,
			     (unsigned long long)v + 1);
			ok = false;
		}
	}
	close(to_child[1]);
	close(to_parent[0]);
	return wait_exit(pid, "ping-pong child") == 0 && ok;
}

static bool stream(size_t total_words)
{
	int fds[2];
	enum { CHUNK = 3000 };	/* not a multiple of the word or page size */

	if (pipe(fds) < 0)
		die_errno("pipe");
	pid_t pid = xfork();

	if (pid == 0) {
		uint64_t *buf = xmap(total_words * sizeof(uint64_t));
		size_t len = total_words * sizeof(uint64_t);

		close(fds[0]);
		fill(buf, total_words, 0x57ea);
		for (size_t off = 0; off < len; off += CHUNK) {
			size_t n = len - off < CHUNK ? len - off : CHUNK;

			if (!write_full(fds[1], (uint8_t *)buf + off, n))
				_exit(2);
		}
		_exit(0);
	}
	close(fds[1]);
	uint64_t *in = xmap(total_words * sizeof(uint64_t));
	bool ok = read_full(fds[0], in, total_words * sizeof(uint64_t));
	uint8_t extra;

	if (!ok)
		diag("the stream ended early");
	ok = ok && verify(in, total_words, 0x57ea, "bytes read from the pipe");
	if (ok && read(fds[0], &extra, 1) != 0) {
		diag("more bytes than were written");
		ok = false;
	}
	close(fds[0]);
	return wait_exit(pid, "stream writer") == 0 && ok;
}

int test_pipe(int argc, char **argv)
{
	unsigned trips = scale(2000);
	size_t words = (size_t)scale(4) << 17;	/* 4 MiB per unit of scale */

	(void)argc;
	(void)argv;
	tap_plan(2);
	tap_ok(ping_pong(trips), "%u ping-pong round trips between two processes", trips);
	tap_ok(stream(words), "%zu KiB streamed through a pipe arrive intact", words * 8 / 1024);
	return tap_status();
}
