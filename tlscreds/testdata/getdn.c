/* Prints the subject DN of a PEM certificate as gnutls_x509_crt_get_dn
 * returns it, which is the identity QEMU gives its authz objects.
 * identity_test.go compiles and runs it to compare with FormatDN. */
#include <stdio.h>
#include <stdlib.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
int main(int argc, char **argv) {
  gnutls_datum_t d; gnutls_x509_crt_t c; char buf[4096]; size_t n = sizeof buf;
  if (argc != 2 || gnutls_load_file(argv[1], &d) < 0) return 2;
  gnutls_x509_crt_init(&c);
  if (gnutls_x509_crt_import(c, &d, GNUTLS_X509_FMT_PEM) < 0) return 3;
  int r = gnutls_x509_crt_get_dn(c, buf, &n);
  if (r < 0) { printf("ERR %s\n", gnutls_strerror(r)); return 4; }
  printf("%s\n", buf);
  return 0;
}
