#include "controller/auth/agent_identity.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pgfleet::controller {
namespace {

constexpr absl::string_view kScheme = "pgfleet://";

bool ValidPart(absl::string_view part) {
  if (part.empty()) return false;
  for (char c : part) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<CertificateBinding> ParseAgentUri(const std::string& uri) {
  if (!absl::StartsWith(uri, kScheme)) {
    return absl::InvalidArgumentError(absl::StrCat("'", uri, "' is not a pgfleet:// URI"));
  }
  const absl::string_view path = absl::string_view(uri).substr(kScheme.size());
  std::vector<absl::string_view> parts = absl::StrSplit(path, '/');
  if (parts.size() != 4 || parts[0] != "env" || parts[2] != "agent" || !ValidPart(parts[1]) ||
      !ValidPart(parts[3])) {
    return absl::InvalidArgumentError(absl::StrCat(
        "certificate URI '", uri, "' is not pgfleet://env/<environment>/agent/<agent id>"));
  }
  return CertificateBinding{std::string(parts[1]), std::string(parts[3])};
}

absl::StatusOr<std::vector<std::string>> CertificateUris(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  if (bio == nullptr) return absl::ResourceExhaustedError("BIO_new_mem_buf failed");
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), &X509_free);
  if (cert == nullptr) return absl::InvalidArgumentError("the client certificate does not parse");
  std::vector<std::string> uris;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return uris;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type != GEN_URI) continue;
    const ASN1_IA5STRING* value = name->d.uniformResourceIdentifier;
    uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                      static_cast<size_t>(ASN1_STRING_length(value)));
  }
  GENERAL_NAMES_free(names);
  return uris;
}

absl::StatusOr<std::optional<CertificateBinding>> CertificateBindingFromPem(
    const std::string& pem) {
  absl::StatusOr<std::vector<std::string>> uris = CertificateUris(pem);
  if (!uris.ok()) return uris.status();
  std::optional<CertificateBinding> binding;
  for (const std::string& uri : *uris) {
    if (!absl::StartsWith(uri, kScheme)) continue;
    absl::StatusOr<CertificateBinding> parsed = ParseAgentUri(uri);
    if (!parsed.ok()) return parsed.status();
    if (binding.has_value()) {
      return absl::InvalidArgumentError("the certificate has more than one pgfleet:// URI");
    }
    binding = *parsed;
  }
  return binding;
}

}  // namespace pgfleet::controller
