/* Unit tests for the HTTPS identity: pairs made here with GnuTLS (EC, RSA, Ed25519) load,
 * and every file that cannot be used is refused with the file named. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <gnutls/x509.h>

#include "http/tls.h"
#include "lib/alloc.h"

static char dir[] = "/tmp/test-tls-XXXXXX";

static char *path(const char *name)
{
    return xasprintf("%s/%s", dir, name);
}

static void write_file(const char *name, const void *data, size_t len)
{
    char *p = path(name);
    FILE *f = fopen(p, "w");

    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    free(p);
}

static void write_text(const char *name, const char *text)
{
    write_file(name, text, strlen(text));
}

/* A self-signed certificate NAME.pem with CN=unit-NAME and its key NAME.key. */
static void make_pair(const char *name, gnutls_pk_algorithm_t pk, unsigned bits,
                      unsigned char serial)
{
    gnutls_x509_privkey_t key;
    gnutls_x509_crt_t crt;
    gnutls_datum_t out;
    char cn[64], file[64];
    time_t now = time(NULL);

    snprintf(cn, sizeof(cn), "unit-%s", name);
    assert_int_equal(gnutls_x509_privkey_init(&key), 0);
    assert_int_equal(gnutls_x509_privkey_generate(key, pk, bits, 0), 0);
    assert_int_equal(gnutls_x509_crt_init(&crt), 0);
    assert_int_equal(gnutls_x509_crt_set_version(crt, 3), 0);
    assert_int_equal(gnutls_x509_crt_set_serial(crt, &serial, 1), 0);
    assert_int_equal(gnutls_x509_crt_set_activation_time(crt, now - 60), 0);
    assert_int_equal(gnutls_x509_crt_set_expiration_time(crt, now + 86400), 0);
    assert_int_equal(
        gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn, strlen(cn)), 0);
    assert_int_equal(gnutls_x509_crt_set_key(crt, key), 0);
    assert_int_equal(gnutls_x509_crt_sign2(
                         crt, crt, key,
                         pk == GNUTLS_PK_EDDSA_ED25519 ? GNUTLS_DIG_SHA512 : GNUTLS_DIG_SHA256, 0),
                     0);
    assert_int_equal(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &out), 0);
    snprintf(file, sizeof(file), "%s.pem", name);
    write_file(file, out.data, out.size);
    gnutls_free(out.data);
    assert_int_equal(
        gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &out),
        0);
    snprintf(file, sizeof(file), "%s.key", name);
    write_file(file, out.data, out.size);
    gnutls_free(out.data);
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(key);
}

static char *read_all(const char *name, size_t *ret_len)
{
    char *p = path(name), *buf;
    FILE *f = fopen(p, "r");
    long len;

    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    buf = xmalloc((size_t)len + 1);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    free(p);
    *ret_len = (size_t)len;
    return buf;
}

static int setup(void **state)
{
    size_t len;
    char *a, *big;
    FILE *f;
    char *p;

    if (!mkdtemp(dir))
        return -1;
    make_pair("ec", GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0x0a);
    make_pair("rsa", GNUTLS_PK_RSA, 2048, 0x0b);
    make_pair("ed", GNUTLS_PK_EDDSA_ED25519, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_ED25519), 0x0c);
    write_text("garbage.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
    write_text("empty.pem", "");
    /* The EC certificate twice (a chain of two), and 17 times (too long a chain). */
    a = read_all("ec.pem", &len);
    p = path("chain2.pem");
    f = fopen(p, "w");
    fwrite(a, 1, len, f);
    fwrite(a, 1, len, f);
    fclose(f);
    free(p);
    p = path("chain17.pem");
    f = fopen(p, "w");
    for (int i = 0; i < TLS_CHAIN_MAX + 1; i++)
        fwrite(a, 1, len, f);
    fclose(f);
    free(p);
    free(a);
    big = xcalloc(1, TLS_FILE_MAX + 1);
    memset(big, '\n', TLS_FILE_MAX + 1);
    write_file("big.pem", big, TLS_FILE_MAX + 1);
    free(big);
    return 0;
}

static int teardown(void **state)
{
    const char *names[] = {"ec.pem",     "ec.key",      "rsa.pem",     "rsa.key",
                           "ed.pem",     "ed.key",      "garbage.pem", "empty.pem",
                           "chain2.pem", "chain17.pem", "big.pem"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *p = path(names[i]);
        unlink(p);
        free(p);
    }
    rmdir(dir);
    return 0;
}

/* Loads NAME.pem with KEY.key; returns the result, err filled. */
static int load(const char *cert, const char *key, struct tls_identity **ret, char *err,
                size_t size)
{
    char *c = path(cert), *k = path(key);
    int r = tls_identity_load(c, k, ret, err, size);

    free(c);
    free(k);
    return r;
}

static void test_pairs_load(void **state)
{
    const char *pairs[][3] = {{"ec.pem", "ec.key", "CN=unit-ec, serial 0a"},
                              {"rsa.pem", "rsa.key", "CN=unit-rsa, serial 0b"},
                              {"ed.pem", "ed.key", "CN=unit-ed, serial 0c"},
                              {"chain2.pem", "ec.key", "CN=unit-ec, serial 0a"}};

    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        struct tls_identity *id = NULL;
        gnutls_pcert_st *certs;
        gnutls_privkey_t key;
        unsigned n;
        char err[512] = "";

        if (load(pairs[i][0], pairs[i][1], &id, err, sizeof(err)) != 0)
            fail_msg("%s with %s: %s", pairs[i][0], pairs[i][1], err);
        assert_non_null(strstr(tls_identity_describe(id), pairs[i][2]));
        assert_non_null(strstr(tls_identity_describe(id), "valid until "));
        tls_identity_get(id, &certs, &n, &key);
        assert_int_equal(n, strcmp(pairs[i][0], "chain2.pem") == 0 ? 2 : 1);
        assert_non_null(key);
        /* A connection's reference outlives the server's. */
        assert_ptr_equal(tls_identity_ref(id), id);
        tls_identity_unref(id);
        tls_identity_get(id, &certs, &n, &key);
        assert_non_null(certs[0].cert.data);
        tls_identity_unref(id);
    }
    tls_identity_unref(NULL);
}

static void test_key_of_another_certificate(void **state)
{
    const char *pairs[][2] = {
        {"ec.pem", "rsa.key"}, {"rsa.pem", "ec.key"}, {"ec.pem", "ed.key"}, {"ed.pem", "ec.key"}};

    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        struct tls_identity *id = NULL;
        char err[512], *c = path(pairs[i][0]), *k = path(pairs[i][1]), *want;

        assert_int_equal(load(pairs[i][0], pairs[i][1], &id, err, sizeof(err)), -EINVAL);
        assert_null(id);
        want = xasprintf("TLS key %s does not match the certificate %s", k, c);
        if (!strstr(err, want))
            fail_msg("%s with %s: %s", pairs[i][0], pairs[i][1], err);
        free(want);
        free(c);
        free(k);
    }
}

static void test_another_ec_key_does_not_match(void **state)
{
    struct tls_identity *id = NULL;
    char err[512];

    make_pair("ec2", GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0x0d);
    assert_int_equal(load("ec.pem", "ec2.key", &id, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "does not match"));
    for (const char *const *n = (const char *const[]){"ec2.pem", "ec2.key", NULL}; *n; n++) {
        char *p = path(*n);
        unlink(p);
        free(p);
    }
}

/* Each bad file is named, with what is wrong. */
static void test_unusable_files(void **state)
{
    const struct {
        const char *cert, *key;
        int r;
        const char *what; /* "TLS certificate" or "TLS key" (then the bad file's path) */
        const char *why;
    } cases[] = {
        {"nope.pem", "ec.key", -ENOENT, "TLS certificate", "No such file or directory"},
        {"ec.pem", "nope.key", -ENOENT, "TLS key", "No such file or directory"},
        {"garbage.pem", "ec.key", -EINVAL, "TLS certificate", "not a PEM certificate chain"},
        {"empty.pem", "ec.key", -EINVAL, "TLS certificate", "the file is empty"},
        {"ec.key", "ec.key", -EINVAL, "TLS certificate", "not a PEM certificate chain"},
        {"ec.pem", "ec.pem", -EINVAL, "TLS key", "not an unencrypted PEM private key"},
        {"ec.pem", "garbage.pem", -EINVAL, "TLS key", "not an unencrypted PEM private key"},
        {"chain17.pem", "ec.key", -EINVAL, "TLS certificate", "at most 16"},
        {"big.pem", "ec.key", -EFBIG, "TLS certificate", "larger than"},
        {".", "ec.key", -EINVAL, "TLS certificate", "not a regular file"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tls_identity *id = NULL;
        int r;
        const char *bad = strcmp(cases[i].what, "TLS key") == 0 ? cases[i].key : cases[i].cert;
        char err[512], *p = path(bad), *want = xasprintf("%s %s: ", cases[i].what, p);

        err[0] = '\0';
        r = load(cases[i].cert, cases[i].key, &id, err, sizeof(err));
        if (r != cases[i].r || id || !strstr(err, want) || !strstr(err, cases[i].why))
            fail_msg("%s with %s: %d: %s", cases[i].cert, cases[i].key, r, err);
        free(want);
        free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pairs_load),
        cmocka_unit_test(test_key_of_another_certificate),
        cmocka_unit_test(test_another_ec_key_does_not_match),
        cmocka_unit_test(test_unusable_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
