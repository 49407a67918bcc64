/* Unit tests for address ranges: parsing with its three errors, and matching. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "lib/cidr.h"

/* True when text (an address) is in the range. */
static bool in(const char *range, const char *text)
{
    struct cidr c;
    unsigned char addr[16];
    int family = strchr(text, ':') ? AF_INET6 : AF_INET;

    assert_int_equal(cidr_parse(range, &c), 0);
    assert_int_equal(inet_pton(family, text, addr), 1);
    return cidr_contains(&c, family, addr);
}

static void test_parse_good(void **state)
{
    struct cidr c;
    char buf[80];

    assert_int_equal(cidr_parse("127.0.0.1", &c), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(cidr_parse("10.0.0.0/8", &c), 0);
    assert_int_equal(c.prefix, 8);
    assert_string_equal(cidr_format(&c, buf, sizeof(buf)), "10.0.0.0/8");
    assert_int_equal(cidr_parse("::1", &c), 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(cidr_parse("fd00::/8", &c), 0);
    assert_string_equal(cidr_format(&c, buf, sizeof(buf)), "fd00::/8");
    assert_int_equal(cidr_parse("0.0.0.0/0", &c), 0);
    assert_int_equal(c.prefix, 0);
    assert_int_equal(cidr_parse("::/0", &c), 0);
    assert_int_equal(cidr_parse("192.168.1.128/25", &c), 0);
    assert_int_equal(cidr_parse("::ffff:10.0.0.1", &c), 0);
}

static void test_parse_bad(void **state)
{
    static const char *const bad[] = {
        "",
        "/",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/x",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/ 8",
        " 10.0.0.0/8",
        "10.0.0.0/8 ",
        "10.0.0.300",
        "10.0.0",
        "localhost",
        "[::1]",
        "::1/8/8",
        "10.0.0.0/8/8",
        "1.2.3.4:80",
        "fe80::1%eth0",
        "10.0.0.0/0008",
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    };
    struct cidr c = {.prefix = 99};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = cidr_parse(bad[i], &c);
        if (r != -EINVAL)
            fail_msg("'%s' gave %d", bad[i], r);
        assert_int_equal(c.prefix, 99); /* nothing written */
    }
}

static void test_parse_range_errors(void **state)
{
    struct cidr c;

    assert_int_equal(cidr_parse("10.0.0.0/33", &c), -ERANGE);
    assert_int_equal(cidr_parse("::/129", &c), -ERANGE);
    assert_int_equal(cidr_parse("10.0.0.0/999", &c), -ERANGE);
    assert_int_equal(cidr_parse("10.0.0.1/8", &c), -EDOM);
    assert_int_equal(cidr_parse("192.168.1.129/25", &c), -EDOM);
    assert_int_equal(cidr_parse("::1/64", &c), -EDOM);
    assert_int_equal(cidr_parse("10.0.0.1/32", &c), 0);
}

static void test_contains(void **state)
{
    assert_true(in("10.0.0.0/8", "10.255.1.2"));
    assert_false(in("10.0.0.0/8", "11.0.0.0"));
    assert_true(in("127.0.0.1", "127.0.0.1"));
    assert_false(in("127.0.0.1", "127.0.0.2"));
    assert_true(in("192.168.1.128/25", "192.168.1.200"));
    assert_false(in("192.168.1.128/25", "192.168.1.127"));
    assert_true(in("0.0.0.0/0", "203.0.113.7"));
    assert_true(in("::1", "::1"));
    assert_false(in("::1", "::2"));
    assert_true(in("fd00::/8", "fdab::1"));
    assert_false(in("fd00::/8", "fe00::1"));
    assert_true(in("2001:db8::/33", "2001:db8:7fff::1"));
    assert_false(in("2001:db8::/33", "2001:db8:8000::1"));
    /* Families never meet. */
    assert_false(in("0.0.0.0/0", "::1"));
    assert_false(in("::/0", "127.0.0.1"));
}

static void test_unmap(void **state)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;

    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(80);
    assert_int_equal(inet_pton(AF_INET6, "::ffff:10.1.2.3", &in6->sin6_addr), 1);
    cidr_unmap(&ss);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(in4->sin_port), 80);
    assert_int_equal(ntohl(in4->sin_addr.s_addr), 0x0a010203);

    memset(&ss, 0, sizeof(ss));
    in6->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, "::1", &in6->sin6_addr), 1);
    cidr_unmap(&ss);
    assert_int_equal(ss.ss_family, AF_INET6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_range_errors),
        cmocka_unit_test(test_contains),
        cmocka_unit_test(test_unmap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
