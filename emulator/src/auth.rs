//! Authentication as the real server does it: the key is an HS256 JWT whose `organization` claim
//! names the tenant; the signature and expiry are not verified.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// Who is calling.
pub struct Caller {
    pub organization: String,
}

/// Why a request is not authenticated; the two messages of the real server.
pub enum Denied {
    Missing,
    Invalid,
}

impl Denied {
    pub fn body(&self) -> Value {
        let (message, hint) = match self {
            Denied::Missing => (
                "Authorization header is required",
                "Include 'Authorization: Bearer <token>' header",
            ),
            Denied::Invalid => (
                "Invalid or expired authentication token",
                "Ensure you're using a valid Kubiya API token",
            ),
        };
        json!({"detail": {"error": "Unauthorized", "message": message, "hint": hint}})
    }
}

/// The caller of a request, from `Authorization: UserKey|Bearer <key>`, a raw token, or a
/// separate `UserKey` header.
pub fn caller(headers: &HeaderMap) -> Result<Caller, Denied> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let token = match header("authorization") {
        Some(v) if v.starts_with("UserKey ") => v["UserKey ".len()..].trim(),
        Some(v) if v.starts_with("Bearer ") => v["Bearer ".len()..].trim(),
        // Lowercase "bearer" is not a scheme the server knows: no token.
        Some(v) if v.to_ascii_lowercase().starts_with("bearer ") || v.is_empty() => "",
        Some(v) => v,
        None => header("userkey").unwrap_or(""),
    };
    if token.is_empty() {
        return Err(Denied::Missing);
    }
    decode(token).ok_or(Denied::Invalid)
}

fn decode(token: &str) -> Option<Caller> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?)
            .ok()?;
    let organization = claims.get("organization")?.as_str()?.to_owned();
    if organization.is_empty() || (claims.get("email").is_none() && claims.get("scopes").is_none())
    {
        return None;
    }
    Some(Caller { organization })
}

/// An API key for `organization`, of the kind the real server accepts (`real-server.sh token ORG`).
pub fn token(organization: &str) -> String {
    token_with_claims(
        &json!({"organization": organization, "email": format!("ops@{organization}.test")}),
    )
}

/// An HS256 JWT with these claims (for tests of what the server makes of odd keys).
pub fn token_with_claims(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    // The server does not verify the signature; any bytes do.
    let signature = URL_SAFE_NO_PAD.encode(b"not-verified-by-the-server");
    format!("{header}.{payload}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn every_accepted_form_yields_the_organization() {
        let t = token("acme");
        for h in [
            with("authorization", &format!("UserKey {t}")),
            with("authorization", &format!("Bearer {t}")),
            with("authorization", &t),
            with("userkey", &t),
        ] {
            assert_eq!(
                caller(&h).ok().map(|c| c.organization).as_deref(),
                Some("acme")
            );
        }
    }

    #[test]
    fn missing_and_invalid_tokens_are_told_apart() {
        assert!(matches!(caller(&HeaderMap::new()), Err(Denied::Missing)));
        assert!(matches!(
            caller(&with("authorization", &format!("bearer {}", token("a")))),
            Err(Denied::Missing)
        ));
        assert!(matches!(
            caller(&with("authorization", "Bearer nonsense")),
            Err(Denied::Invalid)
        ));
    }
}
