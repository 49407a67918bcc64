/* The server's TLS identity, loaded with GnuTLS's own PEM readers. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/x509.h>

#include "http/tls.h"
#include "lib/alloc.h"
#include "lib/log.h"

struct tls_identity {
    unsigned refs;
    gnutls_pcert_st certs[TLS_CHAIN_MAX];
    unsigned n;
    gnutls_privkey_t key;
    char description[512];
};

/* Reads a whole file of at most TLS_FILE_MAX bytes; what names it in an error ("the TLS
 * certificate"). */
static int read_pem(const char *what, const char *path, gnutls_datum_t *ret, char *err,
                    size_t err_size)
{
    struct stat st;
    char *buf;
    size_t len = 0;
    int fd, r;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        snprintf(err, err_size, "%s %s: %s", what, path, strerror(-r));
        return r;
    }
    if (fstat(fd, &st) < 0) {
        r = -errno;
        snprintf(err, err_size, "%s %s: %s", what, path, strerror(-r));
        close(fd);
        return r;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, err_size, "%s %s: not a regular file", what, path);
        close(fd);
        return -EINVAL;
    }
    buf = xmalloc(TLS_FILE_MAX + 1);
    for (;;) {
        ssize_t n = read(fd, buf + len, TLS_FILE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            snprintf(err, err_size, "%s %s: %s", what, path, strerror(-r));
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > TLS_FILE_MAX) {
            r = -EFBIG;
            snprintf(err, err_size, "%s %s: larger than %d bytes: not a PEM file", what, path,
                     TLS_FILE_MAX);
            goto fail;
        }
    }
    close(fd);
    if (len == 0) {
        free(buf);
        snprintf(err, err_size, "%s %s: the file is empty", what, path);
        return -EINVAL;
    }
    buf[len] = '\0';
    ret->data = (unsigned char *)buf;
    ret->size = (unsigned)len;
    return 0;
fail:
    close(fd);
    free(buf);
    return r;
}

static void identity_free(struct tls_identity *id)
{
    for (unsigned i = 0; i < id->n; i++)
        gnutls_pcert_deinit(&id->certs[i]);
    if (id->key)
        gnutls_privkey_deinit(id->key);
    free(id);
}

/* Whether key is the private half of the certificate's public key: it signs a test datum
 * that the certificate's key verifies (what GnuTLS itself checks when it loads a pair). */
static bool key_matches(gnutls_privkey_t key, gnutls_pubkey_t pub)
{
    static const char test[] = "service-nanny: does the key match the certificate?";
    const gnutls_datum_t data = {(unsigned char *)test, sizeof(test) - 1};
    const gnutls_digest_algorithm_t digests[] = {GNUTLS_DIG_SHA256, GNUTLS_DIG_SHA512};
    int pk = gnutls_privkey_get_pk_algorithm(key, NULL);

    if (pk != gnutls_pubkey_get_pk_algorithm(pub, NULL))
        return false;
    for (size_t i = 0; i < sizeof(digests) / sizeof(digests[0]); i++) {
        gnutls_sign_algorithm_t sign = gnutls_pk_to_sign((gnutls_pk_algorithm_t)pk, digests[i]);
        gnutls_datum_t sig = {NULL, 0};
        bool ok;

        if (sign == GNUTLS_SIGN_UNKNOWN)
            continue;
        if (gnutls_privkey_sign_data2(key, sign, 0, &data, &sig) < 0)
            return false;
        ok = gnutls_pubkey_verify_data2(pub, sign, 0, &data, &sig) >= 0;
        gnutls_free(sig.data);
        return ok;
    }
    return false;
}

/* "CN=example, serial 0a1b, valid until 2027-12-05" for the log. */
static void describe(struct tls_identity *id)
{
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = {NULL, 0};
    unsigned char serial[64];
    size_t serial_len = sizeof(serial);
    char hex[2 * sizeof(serial) + 1] = "";
    char until[32] = "?";
    time_t expires;
    struct tm tm;

    snprintf(id->description, sizeof(id->description), "?");
    if (gnutls_x509_crt_init(&crt) < 0)
        return;
    if (gnutls_x509_crt_import(crt, &id->certs[0].cert, GNUTLS_X509_FMT_DER) < 0) {
        gnutls_x509_crt_deinit(crt);
        return;
    }
    gnutls_x509_crt_get_dn3(crt, &dn, 0);
    if (gnutls_x509_crt_get_serial(crt, serial, &serial_len) >= 0)
        for (size_t i = 0; i < serial_len; i++)
            snprintf(hex + 2 * i, 3, "%02x", serial[i]);
    expires = gnutls_x509_crt_get_expiration_time(crt);
    if (expires != (time_t)-1 && gmtime_r(&expires, &tm))
        strftime(until, sizeof(until), "%Y-%m-%d %H:%M:%S UTC", &tm);
    snprintf(id->description, sizeof(id->description), "%s, serial %s, valid until %s",
             dn.data ? (const char *)dn.data : "?", hex, until);
    gnutls_free(dn.data);
    gnutls_x509_crt_deinit(crt);
}

int tls_identity_load(const char *cert_file, const char *key_file, struct tls_identity **ret,
                      char *err, size_t err_size)
{
    struct tls_identity *id;
    gnutls_datum_t cert_pem, key_pem;
    int r;

    r = read_pem("TLS certificate", cert_file, &cert_pem, err, err_size);
    if (r < 0)
        return r;
    r = read_pem("TLS key", key_file, &key_pem, err, err_size);
    if (r < 0) {
        free(cert_pem.data);
        return r;
    }
    id = xcalloc(1, sizeof(*id));
    id->refs = 1;
    id->n = TLS_CHAIN_MAX;
    r = gnutls_pcert_list_import_x509_raw(id->certs, &id->n, &cert_pem, GNUTLS_X509_FMT_PEM,
                                          GNUTLS_X509_CRT_LIST_IMPORT_FAIL_IF_EXCEED);
    if (r < 0 || id->n == 0) {
        snprintf(err, err_size,
                 "TLS certificate %s: not a PEM certificate chain of at most %d (GnuTLS: %s)",
                 cert_file, TLS_CHAIN_MAX, gnutls_strerror(r));
        id->n = 0;
        r = -EINVAL;
        goto out;
    }
    r = gnutls_privkey_init(&id->key);
    if (r < 0)
        fatal("gnutls_privkey_init: %s", gnutls_strerror(r));
    r = gnutls_privkey_import_x509_raw(id->key, &key_pem, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (r < 0) {
        snprintf(err, err_size, "TLS key %s: not an unencrypted PEM private key (GnuTLS: %s)",
                 key_file, gnutls_strerror(r));
        r = -EINVAL;
        goto out;
    }
    if (!key_matches(id->key, id->certs[0].pubkey)) {
        snprintf(err, err_size,
                 "TLS key %s does not match the certificate %s (the first certificate in the "
                 "file must be the one the key belongs to)",
                 key_file, cert_file);
        r = -EINVAL;
        goto out;
    }
    describe(id);
    r = 0;
out:
    gnutls_memset(key_pem.data, 0, key_pem.size);
    free(key_pem.data);
    free(cert_pem.data);
    if (r < 0) {
        identity_free(id);
        return r;
    }
    *ret = id;
    return 0;
}

struct tls_identity *tls_identity_ref(struct tls_identity *id)
{
    id->refs++;
    return id;
}

void tls_identity_unref(struct tls_identity *id)
{
    if (id && --id->refs == 0)
        identity_free(id);
}

void tls_identity_get(struct tls_identity *id, gnutls_pcert_st **ret_certs, unsigned *ret_n,
                      gnutls_privkey_t *ret_key)
{
    *ret_certs = id->certs;
    *ret_n = id->n;
    *ret_key = id->key;
}

const char *tls_identity_describe(const struct tls_identity *id)
{
    return id->description;
}
