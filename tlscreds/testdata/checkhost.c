/* Prints 1 if a PEM certificate matches a host name as
 * gnutls_x509_crt_check_hostname decides, which is the check QEMU and
 * libnbd clients make, and 0 if not. x509verify_test.go compiles and runs
 * it to compare with matchCertHostname. */
#include <stdio.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
int main(int argc, char **argv) {
  gnutls_datum_t d; gnutls_x509_crt_t c;
  if (argc != 3 || gnutls_load_file(argv[1], &d) < 0) return 2;
  gnutls_x509_crt_init(&c);
  if (gnutls_x509_crt_import(c, &d, GNUTLS_X509_FMT_PEM) < 0) return 3;
  printf("%u\n", gnutls_x509_crt_check_hostname(c, argv[2]));
  return 0;
}
