#include "common/config/tls_handshake.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pgfleet::config {
namespace {

enum class DheParams { kNone, kAuto, kLegacy };

absl::Status ParseDheParams(absl::string_view value, DheParams& out) {
  if (absl::EqualsIgnoreCase(value, "none")) {
    out = DheParams::kNone;
  } else if (absl::EqualsIgnoreCase(value, "auto")) {
    out = DheParams::kAuto;
  } else if (absl::EqualsIgnoreCase(value, "legacy")) {
    out = DheParams::kLegacy;
  } else {
    return absl::InvalidArgumentError("expected none, auto or legacy");
  }
  return absl::OkStatus();
}

// The reason of the newest OpenSSL error, emptying the queue ("dh key too small").
std::string LastOpenSslReason() {
  std::string reason;
  while (unsigned long code = ERR_get_error()) {
    const char* text = ERR_reason_error_string(code);
    if (text != nullptr) reason = text;
  }
  return reason.empty() ? "rejected by OpenSSL" : reason;
}

struct BnFree {
  void operator()(BIGNUM* bn) const { BN_free(bn); }
};
struct ParamBuildFree {
  void operator()(OSSL_PARAM_BLD* bld) const { OSSL_PARAM_BLD_free(bld); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* params) const { OSSL_PARAM_free(params); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* ctx) const { EVP_PKEY_CTX_free(ctx); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* pkey) const { EVP_PKEY_free(pkey); }
};
struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};

// 1024-bit DH parameters: the RFC 2409 group 2 prime with generator 2, what libtls' "legacy"
// meant. OpenSSL 3 has no named 1024-bit group for TLS, so they are built from the prime.
std::unique_ptr<EVP_PKEY, PkeyFree> LegacyDhParameters() {
  std::unique_ptr<BIGNUM, BnFree> prime(BN_get_rfc2409_prime_1024(nullptr));
  std::unique_ptr<BIGNUM, BnFree> generator(BN_new());
  std::unique_ptr<OSSL_PARAM_BLD, ParamBuildFree> build(OSSL_PARAM_BLD_new());
  if (!prime || !generator || !build || BN_set_word(generator.get(), 2) != 1 ||
      OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_FFC_P, prime.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_FFC_G, generator.get()) != 1) {
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(build.get()));
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> pctx(
      EVP_PKEY_CTX_new_from_name(nullptr, "DH", nullptr));
  EVP_PKEY* pkey = nullptr;
  if (!params || !pctx || EVP_PKEY_fromdata_init(pctx.get()) != 1 ||
      EVP_PKEY_fromdata(pctx.get(), &pkey, EVP_PKEY_KEY_PARAMETERS, params.get()) != 1) {
    return nullptr;
  }
  return std::unique_ptr<EVP_PKEY, PkeyFree>(pkey);
}

absl::Status OnScratchContext(absl::Status (*apply)(SSL_CTX*, absl::string_view),
                              absl::string_view value) {
  std::unique_ptr<SSL_CTX, SslCtxFree> scratch(SSL_CTX_new(TLS_server_method()));
  if (!scratch) return absl::InternalError(absl::StrCat("SSL_CTX_new: ", LastOpenSslReason()));
  return apply(scratch.get(), value);
}

}  // namespace

absl::Status ApplyTls13Ciphers(SSL_CTX* ctx, absl::string_view value) {
  if (value.empty()) return absl::OkStatus();
  const std::string list(value);
  // One name at a time first: given a list, OpenSSL drops the names it does not know.
  for (absl::string_view name : absl::StrSplit(list, ':')) {
    const std::string suite(absl::StripAsciiWhitespace(name));
    if (suite.empty() || SSL_CTX_set_ciphersuites(ctx, suite.c_str()) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown TLS 1.3 cipher suite '", suite,
          "' (expected TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, "
          "TLS_AES_128_GCM_SHA256, TLS_AES_128_CCM_8_SHA256 or TLS_AES_128_CCM_SHA256, "
          "colon-separated)"));
    }
  }
  if (SSL_CTX_set_ciphersuites(ctx, list.c_str()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("TLS 1.3 cipher suites: ", LastOpenSslReason()));
  }
  return absl::OkStatus();
}

absl::Status ApplyEcdhCurve(SSL_CTX* ctx, absl::string_view value) {
  if (absl::EqualsIgnoreCase(value, "auto") || absl::EqualsIgnoreCase(value, "none")) {
    return absl::OkStatus();
  }
  // One name, as in PgBouncer: OpenSSL would read "a:b" as a list.
  if (value.empty() || absl::StrContains(value, ':') || absl::StrContains(value, ',')) {
    return absl::InvalidArgumentError("expected none, auto or one curve name");
  }
  const std::string curve(value);
  if (SSL_CTX_set1_groups_list(ctx, curve.c_str()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown curve '", curve, "' (expected none, auto or a name such as prime256v1, ",
        "secp384r1, X25519)"));
  }
  return absl::OkStatus();
}

absl::Status ApplyDheParams(SSL_CTX* ctx, absl::string_view value) {
  DheParams params = DheParams::kAuto;
  if (absl::Status parsed = ParseDheParams(value, params); !parsed.ok()) return parsed;
  switch (params) {
    case DheParams::kNone:
      // Without parameters a server context offers no DHE suite.
      SSL_CTX_set_dh_auto(ctx, 0);
      return absl::OkStatus();
    case DheParams::kAuto:
      SSL_CTX_set_dh_auto(ctx, 1);
      return absl::OkStatus();
    case DheParams::kLegacy:
      break;
  }
  std::unique_ptr<EVP_PKEY, PkeyFree> legacy = LegacyDhParameters();
  if (!legacy) {
    return absl::InternalError(absl::StrCat("1024-bit DH parameters: ", LastOpenSslReason()));
  }
  SSL_CTX_set_dh_auto(ctx, 0);
  // Checked against the context's security level here (level 2 wants 2048 bits).
  if (SSL_CTX_set0_tmp_dh_pkey(ctx, legacy.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "1024-bit DH refused at OpenSSL security level ", SSL_CTX_get_security_level(ctx), " (",
        LastOpenSslReason(), "); lower it with @SECLEVEL=1 in client_tls_ciphers"));
  }
  static_cast<void>(legacy.release());  // The context owns it now.
  return absl::OkStatus();
}

absl::Status CheckTls13Ciphers(absl::string_view value) {
  return OnScratchContext(&ApplyTls13Ciphers, value);
}

absl::Status CheckEcdhCurve(absl::string_view value) {
  return OnScratchContext(&ApplyEcdhCurve, value);
}

absl::Status CheckDheParams(absl::string_view value) {
  DheParams params = DheParams::kAuto;
  return ParseDheParams(value, params);
}

}  // namespace pgfleet::config
