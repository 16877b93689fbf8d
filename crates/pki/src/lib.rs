//! Certificates for Vexil's TLS: the one place that makes them.
//!
//! A cluster trusts one private certificate authority ([`Ca`]). The CA issues each node one
//! certificate ([`Ca::issue`]) that the node both serves its API and Raft ports with and
//! presents when it dials a peer, so every issued certificate carries both the `serverAuth`
//! and the `clientAuth` extended key usage; clients that use mutual TLS get theirs the same
//! way. Each subject alternative name is an IP address when it parses as one, else a DNS
//! name: a certificate must name every address peers and clients dial.
//!
//! `vexilctl tls create-ca` / `tls issue`, the server's tests and `vexil-testkit` all make
//! certificates through this crate; nothing else in the workspace generates one.
//!
//! ```
//! let ca = vexil_pki::Ca::generate("vexil test CA")?;
//! let node = ca.issue("node-1", &["node-1.internal".to_string(), "10.0.0.1".to_string()])?;
//! assert!(node.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! // The CA can be written out and read back to issue more later.
//! let again = vexil_pki::Ca::from_pem(ca.cert_pem(), ca.key_pem())?;
//! again.issue("vexilctl", &["localhost".to_string()])?;
//! # Ok::<(), vexil_pki::PkiError>(())
//! ```
//!
//! Keys are ECDSA P-256 (what rustls and every gRPC client accept), PEM-encoded as PKCS#8.
//! Validity: [`limits::CA_VALIDITY_DAYS`] for a CA, [`limits::LEAF_VALIDITY_DAYS`] for what it
//! issues (never past the CA's own expiry), both back-dated by [`limits::BACKDATE_MINUTES`].

pub mod limits;

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::{Duration, OffsetDateTime};

/// Why a certificate could not be made or a CA could not be read. `Invalid` names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// An input was refused: `field` names it (`common name`, `SAN "x y"`, `CA certificate`,
    /// `CA key`), `problem` says what is wrong with it.
    #[error("invalid {field}: {problem}")]
    Invalid { field: String, problem: String },
    /// The crypto library failed to make a key or sign (not caused by the inputs).
    #[error("cannot make the certificate: {0}")]
    Generate(String),
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> PkiError {
    PkiError::Invalid { field: field.into(), problem: problem.into() }
}

fn generate_error(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

/// A certificate authority: its certificate and key, and what it needs to sign.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// What an issued certificate may not outlive.
    not_after: OffsetDateTime,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Ca").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

/// A certificate issued by a [`Ca`], with its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate (`-----BEGIN CERTIFICATE-----`). It does not include the CA's.
    pub cert_pem: String,
    /// Its private key, PKCS#8 (`-----BEGIN PRIVATE KEY-----`). Keep it to its owner (mode 0600).
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).field("key_pem", &"[secret]").finish()
    }
}

impl Ca {
    /// A new CA with a fresh key, named `common_name` (e.g. `vexil prod CA`). It may sign
    /// end-entity certificates only (path length 0), not further CAs.
    pub fn generate(common_name: &str) -> Result<Ca, PkiError> {
        check_common_name(common_name)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = now - Duration::minutes(limits::BACKDATE_MINUTES);
        params.not_after = now + Duration::days(limits::CA_VALIDITY_DAYS);
        let key = KeyPair::generate().map_err(generate_error)?;
        let cert = params.self_signed(&key).map_err(generate_error)?;
        let not_after = params.not_after;
        Ok(Ca { cert_pem: cert.pem(), key_pem: key.serialize_pem(), issuer: Issuer::new(params, key), not_after })
    }

    /// A CA read back from its certificate and private key (as [`Ca::cert_pem`] and
    /// [`Ca::key_pem`] wrote them, or any CA certificate with a PKCS#8 key). Refuses a
    /// certificate that is not a CA, has expired, or does not belong to the key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| invalid("CA certificate", format!("not a PEM certificate ({e})")))?;
        if pem.label != "CERTIFICATE" {
            return Err(invalid("CA certificate", format!("the PEM block is a {:?}, not a CERTIFICATE", pem.label)));
        }
        let x509 =
            pem.parse_x509().map_err(|e| invalid("CA certificate", format!("not an X.509 certificate ({e})")))?;
        if !x509.is_ca() {
            return Err(invalid("CA certificate", "it is not a CA certificate (basicConstraints CA is not set)"));
        }
        let not_after = OffsetDateTime::from_unix_timestamp(x509.validity().not_after.timestamp())
            .map_err(|e| invalid("CA certificate", format!("its expiry cannot be read ({e})")))?;
        if not_after <= OffsetDateTime::now_utc() {
            return Err(invalid("CA certificate", format!("it expired at {not_after}; make a new CA")));
        }
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| invalid("CA key", format!("not a PEM private key that can sign ({e})")))?;
        if x509.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(&key) {
            return Err(invalid("CA key", "it is not the key of this CA certificate"));
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| invalid("CA certificate", format!("cannot sign with it ({e})")))?;
        Ok(Ca { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), issuer, not_after })
    }

    /// The CA certificate, PEM: what nodes and clients trust (`--cacert`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM (PKCS#8). Whoever holds it can issue certificates the cluster
    /// trusts: keep it off the nodes, mode 0600.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate with a fresh key for `common_name`, valid for every name in
    /// `sans` (each an IP address when it parses as one, `[::1]` included, else a DNS name;
    /// at least one). It carries both `serverAuth` and `clientAuth`: a node serves with it and
    /// dials its peers with it.
    pub fn issue(&self, common_name: &str, sans: &[String]) -> Result<Issued, PkiError> {
        check_common_name(common_name)?;
        if sans.is_empty() {
            return Err(invalid(
                "SANs",
                "at least one is needed: every DNS name and IP address clients and peers dial",
            ));
        }
        if sans.len() > limits::SANS_MAX {
            return Err(invalid("SANs", format!("{} given; the limit is {}", sans.len(), limits::SANS_MAX)));
        }
        let mut names: Vec<SanType> = Vec::with_capacity(sans.len());
        for san in sans {
            let name = parse_san(san)?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names = names;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - Duration::minutes(limits::BACKDATE_MINUTES);
        params.not_after = (now + Duration::days(limits::LEAF_VALIDITY_DAYS)).min(self.not_after);
        let key = KeyPair::generate().map_err(generate_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate_error)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn check_common_name(cn: &str) -> Result<(), PkiError> {
    if cn.trim().is_empty() {
        return Err(invalid("common name", "it is empty"));
    }
    if cn.chars().count() > limits::COMMON_NAME_CHARS_MAX {
        return Err(invalid(
            "common name",
            format!("{cn:?} is longer than {} characters", limits::COMMON_NAME_CHARS_MAX),
        ));
    }
    if cn.chars().any(char::is_control) {
        return Err(invalid("common name", format!("{cn:?} contains a control character")));
    }
    Ok(())
}

/// An IP address when `san` is one (`10.0.0.1`, `::1`, `[::1]`), else a DNS name: labels of
/// letters, digits, `-` and `_`, separated by dots, optionally starting with `*.`.
fn parse_san(san: &str) -> Result<SanType, PkiError> {
    let field = || format!("SAN {san:?}");
    let bare = san.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(san);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if san.is_empty() {
        return Err(invalid(field(), "it is empty"));
    }
    if san.len() > limits::DNS_NAME_CHARS_MAX {
        return Err(invalid(field(), format!("a DNS name is at most {} characters", limits::DNS_NAME_CHARS_MAX)));
    }
    let host = san.strip_prefix("*.").unwrap_or(san);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !host.split('.').all(label_ok) {
        return Err(invalid(
            field(),
            "it is neither an IP address nor a DNS name (labels of letters, digits and '-', separated by dots)",
        ));
    }
    let name = rcgen::string::Ia5String::try_from(san).map_err(|e| invalid(field(), e.to_string()))?;
    Ok(SanType::DnsName(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pem: &str) -> x509_parser::pem::Pem {
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM").1
    }

    #[test]
    fn sans_are_ip_addresses_or_dns_names() {
        assert_eq!(parse_san("10.0.0.1").expect("ip"), SanType::IpAddress("10.0.0.1".parse().expect("ip")));
        assert_eq!(parse_san("[::1]").expect("ip"), SanType::IpAddress("::1".parse().expect("ip")));
        assert!(matches!(parse_san("node-1.vexil.internal").expect("dns"), SanType::DnsName(_)));
        assert!(matches!(parse_san("*.vexil.internal").expect("wildcard"), SanType::DnsName(_)));
        assert!(matches!(parse_san("localhost").expect("dns"), SanType::DnsName(_)));
        for bad in ["", "a b", "-x.example", "x..example", "nöde", "10.0.0.1:7001", "https://x"] {
            let err = parse_san(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("SAN {bad:?}")), "{err}");
        }
    }

    #[test]
    fn an_issued_certificate_is_a_leaf_for_both_ends_of_a_connection() {
        let ca = Ca::generate("test CA").expect("CA");
        let ca_pem = parse(ca.cert_pem());
        let ca_x509 = ca_pem.parse_x509().expect("CA X.509");
        assert!(ca_x509.is_ca());

        let issued = ca.issue("node-1", &["node-1".into(), "127.0.0.1".into(), "127.0.0.1".into()]).expect("issue");
        let pem = parse(&issued.cert_pem);
        let x509 = pem.parse_x509().expect("X.509");
        assert!(!x509.is_ca());
        assert_eq!(x509.issuer(), ca_x509.subject());
        let eku = x509.extended_key_usage().expect("parse").expect("EKU present").value;
        assert!(eku.server_auth && eku.client_auth, "{eku:?}");
        let sans = x509.subject_alternative_name().expect("parse").expect("SAN present").value;
        assert_eq!(sans.general_names.len(), 2, "duplicates are dropped: {sans:?}");
        // Signed by the CA's key.
        x509.verify_signature(Some(ca_x509.public_key())).expect("signed by the CA");
        assert!(x509.validity().not_after <= ca_x509.validity().not_after);
        assert!(x509.validity().is_valid());
        assert!(format!("{issued:?}").contains("[secret]") && !format!("{issued:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn a_ca_read_back_from_pem_issues_under_the_same_name() {
        let ca = Ca::generate("round trip CA").expect("CA");
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).expect("read back");
        let issued = again.issue("x", &["x.example".into()]).expect("issue");
        let ca_pem = parse(ca.cert_pem());
        let ca_x509 = ca_pem.parse_x509().expect("CA X.509");
        let pem = parse(&issued.cert_pem);
        let x509 = pem.parse_x509().expect("X.509");
        assert_eq!(x509.issuer(), ca_x509.subject());
        x509.verify_signature(Some(ca_x509.public_key())).expect("signed by the CA");
    }

    #[test]
    fn bad_inputs_are_refused_naming_what_is_wrong() {
        let ca = Ca::generate("CA").expect("CA");
        let other = Ca::generate("other CA").expect("CA");
        let err = Ca::from_pem(ca.cert_pem(), other.key_pem()).expect_err("wrong key");
        assert_eq!(err, invalid("CA key", "it is not the key of this CA certificate"));
        let leaf = ca.issue("leaf", &["leaf".into()]).expect("issue");
        let err = Ca::from_pem(&leaf.cert_pem, &leaf.key_pem).expect_err("not a CA");
        assert!(err.to_string().starts_with("invalid CA certificate: it is not a CA"), "{err}");
        let err = Ca::from_pem("hello", ca.key_pem()).expect_err("not PEM");
        assert!(err.to_string().starts_with("invalid CA certificate"), "{err}");
        let err = Ca::from_pem(ca.key_pem(), ca.key_pem()).expect_err("a key is not a certificate");
        assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
        let err = Ca::from_pem(ca.cert_pem(), "nope").expect_err("not a key");
        assert!(err.to_string().starts_with("invalid CA key"), "{err}");

        assert!(matches!(ca.issue("x", &[]), Err(PkiError::Invalid { field, .. }) if field == "SANs"));
        let many: Vec<String> = (0..=limits::SANS_MAX).map(|i| format!("n{i}")).collect();
        assert!(ca.issue("x", &many).is_err());
        assert!(Ca::generate("").is_err());
        assert!(Ca::generate(&"x".repeat(limits::COMMON_NAME_CHARS_MAX + 1)).is_err());
        assert!(format!("{ca:?}").find("PRIVATE").is_none());
    }
}
