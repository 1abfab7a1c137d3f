//! The TLS 1.2 cipher suites of Mozilla's server-side TLS 6.0 `intermediate` profile, in its
//! order: one definition for both TLS stacks deployctl configures — the fronts' OpenSSL
//! (`deployctl::tls`, by OpenSSL name, into `ssl_ciphers`) and the embedded server's rustls
//! (`deployctl_server::tls`, by IANA name, which is how rustls names its suites), so the two
//! cannot drift apart. Does not own: TLS 1.3 suites (the same three everywhere, which both
//! stacks spell their own way), groups or protocol versions.

/// One TLS 1.2 suite by both of its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// The IANA (RFC) name, `TLS_ECDHE_…`: rustls's `CipherSuite` variant.
    pub iana: &'static str,
    /// OpenSSL's name, `ECDHE-…`: what nginx's `ssl_ciphers` takes.
    pub openssl: &'static str,
}

/// Guidelines 6.0 intermediate `ciphers.iana` / `ciphers.openssl` (TLS 1.2; all in OpenSSL
/// since 1.1.0 and in rustls with ring).
pub const INTERMEDIATE_TLS12: [Suite; 6] = [
    Suite {
        iana: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        openssl: "ECDHE-ECDSA-AES128-GCM-SHA256",
    },
    Suite {
        iana: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        openssl: "ECDHE-RSA-AES128-GCM-SHA256",
    },
    Suite {
        iana: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        openssl: "ECDHE-ECDSA-AES256-GCM-SHA384",
    },
    Suite {
        iana: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        openssl: "ECDHE-RSA-AES256-GCM-SHA384",
    },
    Suite {
        iana: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        openssl: "ECDHE-ECDSA-CHACHA20-POLY1305",
    },
    Suite {
        iana: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        openssl: "ECDHE-RSA-CHACHA20-POLY1305",
    },
];
