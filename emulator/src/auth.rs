//! Authentication as the real server does it: the key is an HS256 JWT whose `organization` claim
//! names the tenant; the signature and expiry are not verified.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// Who is calling.
pub struct Caller {
    pub organization: String,
    /// What the server records as `created_by`.
    pub user_id: Option<String>,
}

/// Why a request is not authenticated; the two messages of the real server.
pub enum Denied {
    Missing,
    Invalid,
}

impl Denied {
    pub fn body(&self) -> Value {
        let (message, hint) = match self {
            Denied::Missing => {
                ("Authorization header is required", "Include 'Authorization: Bearer <token>' header")
            }
            Denied::Invalid => {
                ("Invalid or expired authentication token", "Ensure you're using a valid Kubiya API token")
            }
        };
        json!({"detail": {"error": "Unauthorized", "message": message, "hint": hint}})
    }
}

/// The caller of a request, parsed as the real server does: `Authorization` with one of the
/// case-sensitive prefixes `Bearer `, `UserKey ` (or the tolerated typo `Baerer `), or a value with
/// no space at all, which is the token itself; any other value is ignored and a separate
/// `UserKey` header is used instead.
pub fn caller(headers: &HeaderMap) -> Result<Caller, Denied> {
    let token = presented(headers);
    if token.is_empty() {
        return Err(Denied::Missing);
    }
    decode(token).ok_or(Denied::Invalid)
}

/// The token a request presents, found as [`caller`] finds it, whether or not it is valid; empty
/// when there is none.
pub fn presented(headers: &HeaderMap) -> &str {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let from_authorization = header("authorization").and_then(|v| {
        ["Bearer ", "UserKey ", "Baerer "]
            .iter()
            .find_map(|p| v.strip_prefix(p))
            .or_else(|| (!v.contains(' ')).then_some(v))
    });
    from_authorization.or_else(|| header("userkey")).unwrap_or("")
}

/// The claims the server reads without verifying the signature: a truthy `organization` with a
/// truthy `email` (user keys) or a non-empty `scopes` (management keys). Anything else the server
/// sends for external validation, which fails in a closed test bed.
fn decode(token: &str) -> Option<Caller> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?).ok()?;
    let truthy = |k: &str| match claims.get(k) {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Bool(b)) => *b,
        Some(Value::Null) | None => false,
        Some(_) => true,
    };
    let organization = claims.get("organization")?.as_str().filter(|o| !o.is_empty())?.to_owned();
    let id = |keys: &[&str]| keys.iter().find_map(|k| claims.get(*k)?.as_str().map(str::to_owned));
    let user_id = if truthy("email") {
        id(&["token_id", "user_id"])
    } else if truthy("scopes") {
        id(&["jti", "token_id"])
    } else {
        return None;
    };
    Some(Caller { organization, user_id })
}

/// An API key for `organization`, of the kind the real server accepts (`real-server.sh token ORG`).
pub fn token(organization: &str) -> String {
    token_with_claims(&json!({"organization": organization, "email": format!("ops@{organization}.test")}))
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
            assert_eq!(caller(&h).ok().map(|c| c.organization).as_deref(), Some("acme"));
        }
    }

    #[test]
    fn the_presented_token_is_found_whatever_its_validity() {
        let t = token("acme");
        assert_eq!(presented(&with("authorization", &format!("UserKey {t}"))), t);
        assert_eq!(presented(&with("authorization", "Bearer nonsense")), "nonsense");
        assert_eq!(presented(&with("userkey", "raw")), "raw");
        assert_eq!(presented(&HeaderMap::new()), "");
    }

    #[test]
    fn missing_and_invalid_tokens_are_told_apart() {
        assert!(matches!(caller(&HeaderMap::new()), Err(Denied::Missing)));
        assert!(matches!(
            caller(&with("authorization", &format!("bearer {}", token("a")))),
            Err(Denied::Missing)
        ));
        assert!(matches!(caller(&with("authorization", "Bearer nonsense")), Err(Denied::Invalid)));
    }
}
