/* Unit tests for portcheck.c: real sockets on 127.0.0.1 and a real loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/portcheck.h"

#define TIMEOUT_MS 2000 /* a bound on loopback, where answers come at once */

struct answer {
    int calls;
    unsigned taken_port;
};

static void on_done(void *data, unsigned taken_port)
{
    struct answer *a = data;

    a->calls++;
    a->taken_port = taken_port;
}

/* A socket bound to a free loopback port, listening when listen_backlog >= 0; *ret_port is
 * its port. */
static int bound_socket(int listen_backlog, unsigned *ret_port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    if (listen_backlog >= 0)
        assert_int_equal(listen(fd, listen_backlog), 0);
    *ret_port = ntohs(addr.sin_port);
    return fd;
}

/* A loopback port that nothing listens on: bound once, then let go. */
static unsigned closed_port(void)
{
    unsigned port;
    int fd = bound_socket(-1, &port);

    close(fd);
    return port;
}

/* Runs a check of the ports to its end; returns the answer, after checking that it came
 * exactly once and not before portcheck_start() returned. */
static unsigned check(const unsigned *ports, size_t n)
{
    uv_loop_t loop;
    struct answer a = {0};

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_non_null(portcheck_start(&loop, ports, n, TIMEOUT_MS, on_done, &a));
    assert_int_equal(a.calls, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
    return a.taken_port;
}

static void test_listening_port_is_taken(void **state)
{
    unsigned port;
    int fd = bound_socket(16, &port);

    assert_int_equal(check(&port, 1), port);
    close(fd);
}

static void test_closed_port_is_free(void **state)
{
    unsigned port = closed_port();

    assert_int_equal(check(&port, 1), 0);
}

/* Several ports: the answer is the first taken one in the list's order. */
static void test_first_taken_port_of_several(void **state)
{
    unsigned taken1, taken2;
    int fd1 = bound_socket(16, &taken1), fd2 = bound_socket(16, &taken2);
    unsigned free1 = closed_port(), free2 = closed_port();
    unsigned one_taken[] = {free1, taken1, free2};
    unsigned two_taken[] = {free1, taken2, taken1};
    unsigned none_taken[] = {free1, free2};

    assert_int_equal(check(one_taken, 3), taken1);
    assert_int_equal(check(two_taken, 3), taken2);
    assert_int_equal(check(none_taken, 2), 0);
    close(fd1);
    close(fd2);
}

static void test_no_ports(void **state)
{
    assert_int_equal(check(NULL, 0), 0);
}

/* Ports that cannot be tried count as free. */
static void test_out_of_range_ports_are_free(void **state)
{
    unsigned ports[] = {0, 70000};

    assert_int_equal(check(ports, 2), 0);
}

/* A listener whose queue is full answers no connect: it is taken all the same. */
static void test_silent_listener_is_taken(void **state)
{
    struct sockaddr_in addr = {.sin_family = AF_INET};
    unsigned port;
    int fd = bound_socket(0, &port), fillers[4];
    uv_loop_t loop;
    struct answer a = {0};

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)port);
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        assert_true(fillers[i] >= 0);
        assert_true(connect(fillers[i], (struct sockaddr *)&addr, sizeof(addr)) == 0 ||
                    errno == EINPROGRESS);
    }
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_non_null(portcheck_start(&loop, &port, 1, 200, on_done, &a));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.taken_port, port);
    assert_int_equal(uv_loop_close(&loop), 0);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(fd);
}

/* A check cancelled before the loop runs never answers, and its handles all close. */
static void test_cancel_before_the_loop_runs(void **state)
{
    unsigned taken;
    int fd = bound_socket(16, &taken);
    unsigned ports[] = {closed_port(), taken};
    uv_loop_t loop;
    struct answer a = {0};
    struct portcheck *pc;

    assert_int_equal(uv_loop_init(&loop), 0);
    pc = portcheck_start(&loop, ports, 2, TIMEOUT_MS, on_done, &a);
    portcheck_cancel(pc);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);

    /* With no port to try, too. */
    assert_int_equal(uv_loop_init(&loop), 0);
    portcheck_cancel(portcheck_start(&loop, NULL, 0, TIMEOUT_MS, on_done, &a));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listening_port_is_taken),
        cmocka_unit_test(test_closed_port_is_free),
        cmocka_unit_test(test_first_taken_port_of_several),
        cmocka_unit_test(test_no_ports),
        cmocka_unit_test(test_out_of_range_ports_are_free),
        cmocka_unit_test(test_silent_listener_is_taken),
        cmocka_unit_test(test_cancel_before_the_loop_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
