/* The e2e lane's stand-in for /usr/bin/spark-operator: opens the listeners the Go binary opens for
 * the same args (webhook: --webhook-port, default 9443; --enable-metrics=true: the port of
 * --metrics-bind-address; always --health-probe-bind-address, default :8081), the way Go does:
 * one AF_INET6 socket on [::] with IPV6_V6ONLY=0, or AF_INET 0.0.0.0 when binding ::1 fails
 * (Go's ipStackCapabilities probe, net/ipsock_posix.go). With OPLISTEN_NAIVE=1 it listens as a
 * naive server does (a JVM, a C program): AF_INET6 [::] always, V6ONLY left to the netns's
 * net.ipv6.bindv6only. A failed bind exits 1 with Go's message, e.g. for port 443 as uid 185:
 * `listen tcp :443: bind: permission denied` (kubeflow/spark-operator#2331); with
 * OPLISTEN_KEEP_GOING=1 it logs that and serves the other ports, as a server that does not
 * treat a failed listener as fatal would.
 * Process shapes of real servers: OPLISTEN_WORKERS=N forks N prefork workers that share the
 * listening sockets, each renamed `worker-<i>`; OPLISTEN_CHILD_PORT=P forks one child, renamed
 * `child-listener`, that listens on P itself (a root parent below 1024, a child above). The
 * parent reaches pause() only once every child is serving (each writes a byte on a pipe). */
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int go_ipv6_usable(void) {
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int s = socket(AF_INET6, SOCK_STREAM, 0), ok;
    if (s < 0) return 0;
    ok = bind(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

static int flag_port(int argc, char **argv, const char *name, int fallback) {
    size_t n = strlen(name);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') {
            const char *colon = strrchr(argv[i] + n + 1, ':');
            return atoi(colon ? colon + 1 : argv[i] + n + 1);
        }
    return fallback;
}

static int has(int argc, char **argv, const char *arg) {
    for (int i = 1; i < argc; i++) if (strcmp(argv[i], arg) == 0) return 1;
    return 0;
}

static int keep_going, opened[8], n_opened;

static void listen_on(int port, int six, int naive) {
    int s = socket(six ? AF_INET6 : AF_INET, SOCK_STREAM, 0), zero = 0, one = 1, r;
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(port)};
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (six && !naive) setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    r = six ? bind(s, (struct sockaddr *)&a6, sizeof a6) : bind(s, (struct sockaddr *)&a4, sizeof a4);
    if (n_opened < 8) opened[n_opened++] = s;
    if (r != 0 || listen(s, 64) != 0) {
        char reason[128];
        snprintf(reason, sizeof reason, "%s", strerror(errno));
        reason[0] = (char)tolower((unsigned char)reason[0]);  /* Go's errno strings are lower case */
        fprintf(stderr, "listen tcp :%d: bind: %s\n", port, reason);
        if (!keep_going) exit(1);
        close(s);
    }
}

int main(int argc, char **argv) {
    const char *naive_env = getenv("OPLISTEN_NAIVE"), *keep_env = getenv("OPLISTEN_KEEP_GOING");
    int naive = naive_env && strcmp(naive_env, "1") == 0;
    keep_going = keep_env && strcmp(keep_env, "1") == 0;
    int six = naive || go_ipv6_usable();
    if (has(argc, argv, "webhook")) listen_on(flag_port(argc, argv, "--webhook-port", 9443), six, naive);
    if (has(argc, argv, "--enable-metrics=true"))
        listen_on(flag_port(argc, argv, "--metrics-bind-address", 8080), six, naive);
    listen_on(flag_port(argc, argv, "--health-probe-bind-address", 8081), six, naive);
    const char *workers_env = getenv("OPLISTEN_WORKERS"), *child_env = getenv("OPLISTEN_CHILD_PORT");
    int workers = workers_env ? atoi(workers_env) : 0, child_port = child_env ? atoi(child_env) : 0;
    int ready[2];
    if (pipe(ready) != 0) return 2;
    for (int i = 0; i <= workers; i++) {
        if (i == workers && !child_port) break;
        if (fork() == 0) {
            char name[32];
            if (i < workers) snprintf(name, sizeof name, "worker-%d", i + 1);
            else {  /* a child of its own: the parent's sockets are not its own */
                snprintf(name, sizeof name, "child-listener");
                for (int k = 0; k < n_opened; k++) close(opened[k]);
                listen_on(child_port, six, naive);
            }
            prctl(PR_SET_NAME, name, 0, 0, 0);
            if (write(ready[1], "x", 1) != 1) return 2;
            for (;;) pause();
        }
    }
    for (int i = 0; i < workers + (child_port ? 1 : 0); i++) {
        char byte;
        if (read(ready[0], &byte, 1) != 1) return 2;
    }
    for (;;) pause();
}
