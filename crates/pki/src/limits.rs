//! Every bound on the certificates this crate makes, in one place.

/// How long a CA certificate is valid from the moment it is made. Long, because replacing it
/// means re-issuing every node's and client's certificate.
pub const CA_VALIDITY_DAYS: i64 = 10 * 365;

/// How long an issued (node or client) certificate is valid: two years, then it is re-issued
/// from the same CA. Never beyond the CA's own expiry (a leaf cannot outlive its issuer).
pub const LEAF_VALIDITY_DAYS: i64 = 2 * 365;

/// Certificates are valid from this long before they are made, so a peer whose clock runs a
/// little behind does not refuse a certificate made a moment ago as "not yet valid".
pub const BACKDATE_MINUTES: i64 = 60;

/// Longest common name (X.520's upper bound `ub-common-name`).
pub const COMMON_NAME_CHARS_MAX: usize = 64;

/// Subject alternative names one certificate may carry (a node's DNS names and addresses).
pub const SANS_MAX: usize = 64;

/// Longest DNS name (RFC 1035).
pub const DNS_NAME_CHARS_MAX: usize = 253;

const _: () = {
    assert!(LEAF_VALIDITY_DAYS <= CA_VALIDITY_DAYS);
    assert!(BACKDATE_MINUTES > 0 && BACKDATE_MINUTES < 24 * 60);
    assert!(SANS_MAX >= 1);
};
