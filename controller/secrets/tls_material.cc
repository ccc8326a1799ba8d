#include "controller/secrets/tls_material.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <ctime>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace pgfleet::controller::secrets {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct StoreFree {
  void operator()(X509_STORE* store) const { X509_STORE_free(store); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* ctx) const { X509_STORE_CTX_free(ctx); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

Bio MemoryBio(const std::string& text) {
  return Bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

Cert FirstCertificate(const std::string& pem) {
  Bio bio = MemoryBio(pem);
  if (bio == nullptr) return nullptr;
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  return cert;
}

std::vector<Cert> AllCertificates(const std::string& pem) {
  std::vector<Cert> certs;
  Bio bio = MemoryBio(pem);
  if (bio == nullptr) return certs;
  while (true) {
    Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    certs.push_back(std::move(cert));
  }
  ERR_clear_error();
  return certs;
}

int64_t Asn1TimeToUnixMs(const ASN1_TIME* time) {
  struct tm parts = {};
  if (ASN1_TIME_to_tm(time, &parts) != 1) return 0;
  return static_cast<int64_t>(timegm(&parts)) * 1000;
}

std::string Subject(X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr) return "";
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0,
                     XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long length = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, length > 0 ? static_cast<size_t>(length) : 0);
}

std::string FileName(const std::string& side, const char* what) {
  return absl::StrCat(side, "_tls_", what, "_file");
}

std::string FormatDay(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%d %H:%M UTC", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

}  // namespace

absl::StatusOr<CertificateInfo> InspectCertificate(const std::string& pem) {
  Cert cert = FirstCertificate(pem);
  if (cert == nullptr) return absl::InvalidArgumentError("no PEM certificate");
  CertificateInfo info;
  info.subject = Subject(cert.get());
  info.not_before_unix_ms = Asn1TimeToUnixMs(X509_get0_notBefore(cert.get()));
  info.not_after_unix_ms = Asn1TimeToUnixMs(X509_get0_notAfter(cert.get()));
  return info;
}

absl::StatusOr<std::vector<std::string>> ValidateTlsFiles(const TlsFilesToCheck& files,
                                                          int64_t now_unix_ms) {
  std::vector<std::string> warnings;
  const std::string cert_name = FileName(files.side, "cert");
  const std::string key_name = FileName(files.side, "key");
  const std::string ca_name = FileName(files.side, "ca");
  if (files.cert_pem.empty() != files.key_pem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        cert_name, " and ", key_name, " go together: give both the certificate and its key"));
  }
  Cert cert;
  if (!files.cert_pem.empty()) {
    cert = FirstCertificate(files.cert_pem);
    if (cert == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          cert_name, ": not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"));
    }
    Bio bio = MemoryBio(files.key_pem);
    Pkey key(bio == nullptr ? nullptr
                            : PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    ERR_clear_error();
    if (key == nullptr) {
      // Never echo the key file's content.
      return absl::InvalidArgumentError(absl::StrCat(
          key_name, ": not an unencrypted PEM private key (expected -----BEGIN PRIVATE KEY-----)"));
    }
    if (X509_check_private_key(cert.get(), key.get()) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat(key_name, ": the private key does not match the certificate in ", cert_name,
                       " (", Subject(cert.get()), ")"));
    }
    CertificateInfo info;
    info.subject = Subject(cert.get());
    info.not_before_unix_ms = Asn1TimeToUnixMs(X509_get0_notBefore(cert.get()));
    info.not_after_unix_ms = Asn1TimeToUnixMs(X509_get0_notAfter(cert.get()));
    if (info.not_after_unix_ms <= now_unix_ms) {
      return absl::InvalidArgumentError(absl::StrCat(cert_name, ": the certificate (", info.subject,
                                                     ") expired on ",
                                                     FormatDay(info.not_after_unix_ms)));
    }
    if (info.not_before_unix_ms > now_unix_ms) {
      return absl::InvalidArgumentError(absl::StrCat(cert_name, ": the certificate (", info.subject,
                                                     ") is not valid before ",
                                                     FormatDay(info.not_before_unix_ms)));
    }
    if (info.not_after_unix_ms - now_unix_ms < int64_t{30} * 24 * 3600 * 1000) {
      warnings.push_back(absl::StrCat(cert_name, ": the certificate (", info.subject,
                                      ") expires soon, on ", FormatDay(info.not_after_unix_ms)));
    }
  }
  if (!files.ca_pem.empty()) {
    std::vector<Cert> cas = AllCertificates(files.ca_pem);
    if (cas.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(ca_name, ": not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"));
    }
    if (cert != nullptr) {
      std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
      std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
      if (store == nullptr || ctx == nullptr) return absl::ResourceExhaustedError("out of memory");
      for (const Cert& ca : cas) X509_STORE_add_cert(store.get(), ca.get());
      if (X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1) {
        return absl::InternalError("X509_STORE_CTX_init failed");
      }
      X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()),
                                 static_cast<time_t>(now_unix_ms / 1000));
      if (X509_verify_cert(ctx.get()) != 1) {
        const int error = X509_STORE_CTX_get_error(ctx.get());
        ERR_clear_error();
        return absl::InvalidArgumentError(
            absl::StrCat(ca_name, ": does not verify the certificate in ", cert_name, " (",
                         Subject(cert.get()), "): ", X509_verify_cert_error_string(error)));
      }
    }
  }
  return warnings;
}

}  // namespace pgfleet::controller::secrets
