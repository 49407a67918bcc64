/* The server's TLS identity: a certificate chain and its private key, read from PEM files
 * with GnuTLS and checked to belong together. The server hands it to libmicrohttpd from its
 * certificate callback; an identity is counted by the server (the one it serves now) and by
 * each connection whose handshake took it, so that a reload can swap in a new one while the
 * connections opened before keep theirs. */
#ifndef NANNY_TLS_H
#define NANNY_TLS_H

#include <stddef.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>

#define TLS_FILE_MAX  (1024 * 1024) /* a PEM file larger than this is refused */
#define TLS_CHAIN_MAX 16            /* certificates in one chain */

struct tls_identity;

/* Reads cert_file (the server's certificate first, then its chain) and key_file, and
 * checks that the key signs what the certificate's public key verifies. On failure err
 * names the file and the reason; returns 0 or a negative errno. *ret has one reference. */
int tls_identity_load(const char *cert_file, const char *key_file, struct tls_identity **ret,
                      char *err, size_t err_size);

struct tls_identity *tls_identity_ref(struct tls_identity *id);

/* Drops a reference; the last one frees the identity. NULL is allowed. */
void tls_identity_unref(struct tls_identity *id);

/* What a gnutls_certificate_retrieve_function2 returns: pointers into the identity, valid
 * while it has a reference. */
void tls_identity_get(struct tls_identity *id, gnutls_pcert_st **ret_certs, unsigned *ret_n,
                      gnutls_privkey_t *ret_key);

/* The first certificate's subject and serial, for the log ("CN=example, serial 01:02"). */
const char *tls_identity_describe(const struct tls_identity *id);

#endif
