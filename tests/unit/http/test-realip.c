/* Unit tests for the real client behind trusted proxies (X-Forwarded-For), read as
 * nginx's realip module does with real_ip_recursive on. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/realip.h"
#include "lib/alloc.h"

/* 127.0.0.1, 10.0.0.0/8 and ::1 are trusted. */
static struct cidr trusted[3];

static int setup(void **state)
{
    assert_int_equal(cidr_parse("127.0.0.1", &trusted[0]), 0);
    assert_int_equal(cidr_parse("10.0.0.0/8", &trusted[1]), 0);
    assert_int_equal(cidr_parse("::1", &trusted[2]), 0);
    return 0;
}

static struct sockaddr_storage address(const char *text, unsigned port)
{
    struct sockaddr_storage ss = {0};

    if (strchr(text, ':')) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
    } else {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET, text, &in4->sin_addr), 1);
    }
    return ss;
}

/* The client's name for a request from peer with this X-Forwarded-For, trusted as above
 * (n of them); from_header gets whether it came from the header. */
static const char *client_n(const char *peer, const char *xff, size_t n, bool *from_header)
{
    static char name[REALIP_NAME_MAX];
    struct sockaddr_storage p = address(peer, 51234), ret;
    bool from;

    memset(&ret, 0xaa, sizeof(ret));
    from = realip_client(&p, xff, trusted, n, &ret);
    if (from_header)
        *from_header = from;
    /* The port is never kept. */
    if (ret.ss_family == AF_INET)
        assert_int_equal(((struct sockaddr_in *)&ret)->sin_port, 0);
    else
        assert_int_equal(((struct sockaddr_in6 *)&ret)->sin6_port, 0);
    return realip_name(&ret, name, sizeof(name));
}

static const char *client(const char *peer, const char *xff)
{
    return client_n(peer, xff, 3, NULL);
}

static void test_untrusted_peer_is_the_client(void **state)
{
    bool from = true;

    assert_string_equal(client_n("203.0.113.1", "198.51.100.7", 3, &from), "203.0.113.1");
    assert_false(from);
    assert_string_equal(client("127.0.0.2", "198.51.100.7"), "127.0.0.2");
    assert_string_equal(client("::2", "198.51.100.7"), "::2");
    /* No trusted proxies at all: the header means nothing. */
    assert_string_equal(client_n("127.0.0.1", "198.51.100.7", 0, &from), "127.0.0.1");
    assert_false(from);
}

static void test_trusted_peer_without_header(void **state)
{
    bool from = true;

    assert_string_equal(client_n("127.0.0.1", NULL, 3, &from), "127.0.0.1");
    assert_false(from);
    assert_string_equal(client("127.0.0.1", ""), "127.0.0.1");
    assert_string_equal(client("127.0.0.1", "   "), "127.0.0.1");
    assert_string_equal(client("127.0.0.1", ",,, ,\t,"), "127.0.0.1");
}

static void test_rightmost_untrusted_entry(void **state)
{
    bool from = false;

    assert_string_equal(client_n("127.0.0.1", "198.51.100.7", 3, &from), "198.51.100.7");
    assert_true(from);
    /* The client may have sent its own header: only what trusted hops added counts. */
    assert_string_equal(client("127.0.0.1", "6.6.6.6, 198.51.100.7"), "198.51.100.7");
    /* Recursive: past every trusted hop. */
    assert_string_equal(client("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3, 10.9.9.9"),
                        "198.51.100.7");
    assert_string_equal(client("10.0.0.5", "198.51.100.7,10.1.2.3"), "198.51.100.7");
    /* Every entry trusted: the leftmost one. */
    assert_string_equal(client("127.0.0.1", "10.1.1.1, 10.2.2.2"), "10.1.1.1");
    /* Spaces, tabs and empty elements around entries. */
    assert_string_equal(client("127.0.0.1", "  198.51.100.7\t ,  , "), "198.51.100.7");
    assert_string_equal(client("127.0.0.1", ",198.51.100.7"), "198.51.100.7");
}

static void test_ipv6(void **state)
{
    assert_string_equal(client("::1", "2001:db8::7"), "2001:db8::7");
    assert_string_equal(client("127.0.0.1", "2001:db8::7"), "2001:db8::7");
    assert_string_equal(client("::1", "198.51.100.7"), "198.51.100.7");
    /* Brackets and ports, as some proxies write them. */
    assert_string_equal(client("127.0.0.1", "[2001:db8::7]"), "2001:db8::7");
    assert_string_equal(client("127.0.0.1", "[2001:db8::7]:443"), "2001:db8::7");
    assert_string_equal(client("127.0.0.1", "198.51.100.7:51234"), "198.51.100.7");
    assert_string_equal(client("127.0.0.1", "6.6.6.6, [::1]:80"), "6.6.6.6");
    /* IPv4-mapped addresses are IPv4, for matching and for counting. */
    assert_string_equal(client("::ffff:127.0.0.1", "198.51.100.7"), "198.51.100.7");
    assert_string_equal(client("127.0.0.1", "::ffff:198.51.100.7"), "198.51.100.7");
    assert_string_equal(client("127.0.0.1", "6.6.6.6, ::ffff:10.1.1.1"), "6.6.6.6");
    assert_string_equal(client("203.0.113.1", NULL), "203.0.113.1");
    assert_string_equal(client("::ffff:203.0.113.1", NULL), "203.0.113.1");
}

/* An entry that is not an address stops the walk at the last trusted hop. */
static void test_malformed_counts_as_the_last_trusted_hop(void **state)
{
    static const char *const bad[] = {
        "garbage",
        "unknown",
        "198.51.100.7 junk",
        "198.51.100.300",
        "198.51.100",
        "198.51.100.7:",
        "198.51.100.7:port",
        "198.51.100.7:123456",
        "198.51.100.7:80:80",
        "[2001:db8::7",
        "2001:db8::7]",
        "[2001:db8::7]443",
        "[2001:db8::7]:",
        "[198.51.100.7]",
        "[]",
        "[2001:db8::7]:443:1",
        "fe80::1%eth0",
        "2001:db8::7:443:1:2:3:4:5",
        "\"198.51.100.7\"",
        "for=198.51.100.7",
        "198.51.100.7;proto=https",
        "\x01\xff",
        "-1",
    };
    bool from = true;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *got = client_n("127.0.0.1", bad[i], 3, &from);
        if (strcmp(got, "127.0.0.1") != 0 || from)
            fail_msg("'%s' gave %s", bad[i], got);
    }
    /* Past trusted hops: the last of them. */
    assert_string_equal(client("127.0.0.1", "198.51.100.7, garbage, 10.1.2.3"), "10.1.2.3");
    /* A malformed entry left of the client does not matter. */
    assert_string_equal(client("127.0.0.1", "garbage, 198.51.100.7"), "198.51.100.7");
}

static void test_long_entries_and_headers(void **state)
{
    char *text = xmalloc(40000);

    /* One entry far longer than an address. */
    memset(text, '1', 39999);
    text[39999] = '\0';
    assert_string_equal(client("127.0.0.1", text), "127.0.0.1");

    /* A long list: the rightmost entries are all that is read. */
    text[0] = '\0';
    for (size_t len = 0; len + 16 < 39000;)
        len += (size_t)sprintf(text + len, "6.6.6.6, ");
    strcat(text, "198.51.100.7");
    assert_string_equal(client("127.0.0.1", text), "198.51.100.7");

    /* A chain of trusted hops longer than REALIP_HOPS_MAX stops at the last one read. */
    text[0] = '\0';
    for (size_t len = 0, i = 0; i < REALIP_HOPS_MAX + 10; i++)
        len += (size_t)sprintf(text + len, "%s10.0.%zu.%zu", i ? ", " : "", i / 256,
                               (REALIP_HOPS_MAX + 10 - i) % 256);
    {
        /* Read from the right: entries 73 down to 10, the last "10.0.0.(74 - 10)". */
        char want[32];
        snprintf(want, sizeof(want), "10.0.0.%d", REALIP_HOPS_MAX);
        assert_string_equal(client("127.0.0.1", text), want);
    }
    /* Under the cap the leftmost untrusted one is found. */
    text[0] = '\0';
    {
        size_t len = (size_t)sprintf(text, "198.51.100.7");
        for (size_t i = 0; i + 1 < REALIP_HOPS_MAX; i++)
            len += (size_t)sprintf(text + len, ", 10.1.1.%zu", i);
    }
    assert_string_equal(client("127.0.0.1", text), "198.51.100.7");

    /* Only commas and blanks. */
    memset(text, ',', 39999);
    text[39999] = '\0';
    for (size_t i = 0; i < 39999; i += 3)
        text[i] = ' ';
    assert_string_equal(client("127.0.0.1", text), "127.0.0.1");
    free(text);
}

static void test_is_trusted(void **state)
{
    struct sockaddr_storage a = address("10.200.0.1", 80), b = address("11.0.0.1", 80),
                            c = address("::ffff:127.0.0.1", 80), d = address("::2", 80);
    struct sockaddr_storage unix_addr = {.ss_family = AF_UNIX};

    assert_true(realip_is_trusted(trusted, 3, &a));
    assert_false(realip_is_trusted(trusted, 3, &b));
    assert_true(realip_is_trusted(trusted, 3, &c));
    assert_false(realip_is_trusted(trusted, 3, &d));
    assert_false(realip_is_trusted(trusted, 0, &a));
    assert_false(realip_is_trusted(trusted, 3, &unix_addr));
}

static void test_name(void **state)
{
    char buf[REALIP_NAME_MAX];
    struct sockaddr_storage a = address("2001:db8::1", 443), u = {.ss_family = AF_UNIX};

    assert_string_equal(realip_name(&a, buf, sizeof(buf)), "2001:db8::1");
    assert_string_equal(realip_name(&u, buf, sizeof(buf)), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_untrusted_peer_is_the_client),
        cmocka_unit_test(test_trusted_peer_without_header),
        cmocka_unit_test(test_rightmost_untrusted_entry),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_malformed_counts_as_the_last_trusted_hop),
        cmocka_unit_test(test_long_entries_and_headers),
        cmocka_unit_test(test_is_trusted),
        cmocka_unit_test(test_name),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
