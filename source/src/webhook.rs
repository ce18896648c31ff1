//! Push webhooks from GitHub or Gitea: the signature check and the part of the payload
//! Lariat reads.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Why a webhook was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("no webhook secret is configured on this server")]
    NoSecret,
    #[error("missing X-Hub-Signature-256 header")]
    MissingSignature,
    #[error("X-Hub-Signature-256 must be \"sha256=\" and 64 hex digits")]
    MalformedSignature,
    #[error("X-Hub-Signature-256 does not match the payload")]
    BadSignature,
    #[error("payload is not a push event: {0}")]
    BadPayload(String),
}

/// Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` in constant time.
pub fn verify_signature(
    secret: Option<&[u8]>,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), WebhookError> {
    let secret = secret.ok_or(WebhookError::NoSecret)?;
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let hex = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(WebhookError::MalformedSignature)?;
    let given = decode_hex(hex).ok_or(WebhookError::MalformedSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::NoSecret)?;
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| WebhookError::BadSignature)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The fields of a push payload Lariat uses.
#[derive(Debug, Clone, Deserialize)]
pub struct PushEvent {
    /// `refs/heads/<branch>` or `refs/tags/<tag>`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit the ref points to after the push.
    #[serde(default)]
    pub after: Option<String>,
}

impl PushEvent {
    /// Parses a push payload.
    pub fn parse(body: &[u8]) -> Result<PushEvent, WebhookError> {
        serde_json::from_slice(body).map_err(|e| WebhookError::BadPayload(e.to_string()))
    }

    /// Whether the push changes what Lariat follows: the design branch, or a tag (a site
    /// may be pinned to one).
    pub fn concerns(&self, branch: &str) -> bool {
        self.git_ref == format!("refs/heads/{branch}") || self.git_ref.starts_with("refs/tags/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    #[test]
    fn a_signature_must_match_body_and_secret() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"s3cret", body);
        assert_eq!(verify_signature(Some(b"s3cret"), body, Some(&good)), Ok(()));
        assert_eq!(
            verify_signature(Some(b"other"), body, Some(&good)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_signature(Some(b"s3cret"), b"{}", Some(&good)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_signature(Some(b"s3cret"), body, None),
            Err(WebhookError::MissingSignature)
        );
        assert_eq!(
            verify_signature(Some(b"s3cret"), body, Some("sha1=abcd")),
            Err(WebhookError::MalformedSignature)
        );
        assert_eq!(
            verify_signature(None, body, Some(&good)),
            Err(WebhookError::NoSecret)
        );
    }

    #[test]
    fn only_the_design_branch_and_tags_concern_lariat() {
        let p = PushEvent::parse(br#"{"ref":"refs/heads/main","after":"abc"}"#).unwrap();
        assert!(p.concerns("main"));
        assert!(!p.concerns("prod"));
        let t = PushEvent::parse(br#"{"ref":"refs/tags/v1"}"#).unwrap();
        assert!(t.concerns("main"));
        assert!(PushEvent::parse(b"[]").is_err());
    }
}
