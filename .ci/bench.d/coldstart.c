/* Cold-start probe for .ci/bench: time from exec to the first `200` on a health path.
 *
 *   coldstart LOGFILE PORT PATH SERVER_CPU POLL_CPU BINARY
 *
 * Spawns BINARY (environment inherited: the caller sets PORT) pinned to SERVER_CPU with its
 * stdout and stderr appended to LOGFILE, moves itself to POLL_CPU, then polls without sleeping:
 * a non-blocking connect to 127.0.0.1:PORT, retried at once while refused; once connected it
 * sends `GET PATH` and reads the status line. It prints
 *
 *   <ns from spawn to 200> <attempts> <gap ns>
 *
 * then kills the server (SIGKILL) and reaps it. The gap is the time between the start of the
 * last refused attempt and the start of the one that succeeded: the server became ready inside
 * it, so it is the resolution of that run (-1 if the very first attempt succeeded, which means
 * the poller itself was scheduled late and the figure is only an upper bound).
 * Written in C so that the resolution is a few microseconds, not a Python loop's hundred.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

/* 1: got a 200; 0: not yet (refused, reset, other status); the caller retries. */
static int attempt(const struct sockaddr_in *addr, const char *request, size_t len) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return 0;
    int rc = connect(fd, (const struct sockaddr *)addr, sizeof *addr);
    if (rc < 0 && errno != EINPROGRESS) { close(fd); return 0; }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (rc < 0) {
        int err = 0;
        socklen_t elen = sizeof err;
        if (poll(&p, 1, 2000) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) || err) {
            close(fd);
            return 0;
        }
    }
    if (send(fd, request, len, MSG_NOSIGNAL) != (ssize_t)len) { close(fd); return 0; }
    char head[16];
    size_t got = 0;
    p.events = POLLIN;
    while (got < 12 && poll(&p, 1, 2000) == 1) {
        ssize_t n = recv(fd, head + got, sizeof head - got, 0);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    return got >= 12 && memcmp(head + 8, " 200", 4) == 0;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: coldstart LOGFILE PORT PATH SERVER_CPU POLL_CPU BINARY\n");
        return 2;
    }
    int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log < 0) { perror("coldstart: log file"); return 2; }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char request[512];
    int len = snprintf(request, sizeof request,
                       "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", argv[3]);
    if (len <= 0 || len >= (int)sizeof request) { fprintf(stderr, "coldstart: path too long\n"); return 2; }

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, log, 1);
    posix_spawn_file_actions_adddup2(&actions, log, 2);
    char *child_argv[] = {argv[6], NULL};

    pin(atoi(argv[4])); /* the child inherits this affinity */
    pid_t pid;
    long long t0 = now_ns();
    if (posix_spawn(&pid, argv[6], &actions, NULL, child_argv, environ) != 0) {
        perror("coldstart: spawn");
        return 1;
    }
    pin(atoi(argv[5]));

    long long attempts = 0, t1 = 0, deadline = t0 + 10LL * 1000000000LL;
    long long previous = -1, current = -1;
    int status = 1;
    while (1) {
        attempts++;
        previous = current;
        current = now_ns();
        if (attempt(&addr, request, (size_t)len)) { t1 = now_ns(); status = 0; break; }
        if (now_ns() > deadline) { fprintf(stderr, "coldstart: no 200 within 10 s\n"); break; }
        if ((attempts & 1023) == 0 && waitpid(pid, NULL, WNOHANG) == pid) {
            fprintf(stderr, "coldstart: server exited before answering\n");
            return 1;
        }
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    if (status == 0) printf("%lld %lld %lld\n", t1 - t0, attempts, previous < 0 ? -1 : current - previous);
    return status;
}
