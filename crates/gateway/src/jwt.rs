//! HS256 JWTs with `sub`, `exp`, `subscribe` and `publish` claims, checked
//! with the `jsonwebtoken` crate. `exp` is enforced to the second, no leeway.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use tickwire_proto::Pattern;

use crate::auth::{AuthError, Principal, Rights};

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

fn rights(list: &[String], claim: &str) -> Result<Rights, AuthError> {
    if list.is_empty() {
        return Ok(Rights::None);
    }
    list.iter()
        .map(|p| {
            Pattern::parse(p).map_err(|e| AuthError::Malformed(format!("claim '{claim}': {e}")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Rights::Patterns)
}

/// Verifies `token` with `secret` at `now_s` (seconds since the Unix epoch).
///
/// # Errors
/// [`AuthError`] for a bad signature, another algorithm, a malformed token or
/// claim, or an `exp` at or before `now_s`.
pub fn verify(token: &str, secret: &[u8], now_s: u64) -> Result<Principal, AuthError> {
    let mut v = Validation::new(Algorithm::HS256);
    // exp is checked below, to the second; the crate's check allows `exp == now`.
    v.validate_exp = false;
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "sub"]);
    let data =
        decode::<Claims>(token, &DecodingKey::from_secret(secret), &v).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::Unknown,
                _ => AuthError::Malformed(e.to_string()),
            }
        })?;
    let c = data.claims;
    if c.exp <= now_s {
        return Err(AuthError::Expired);
    }
    Ok(Principal {
        subscribe: rights(&c.subscribe, "subscribe")?,
        publish: rights(&c.publish, "publish")?,
        sub: c.sub,
        exp: Some(c.exp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &[u8] = b"0123456789abcdef0123";

    fn token(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn good_token_gives_its_rights() {
        let t = token(
            serde_json::json!({"sub":"ann","exp":2000,"subscribe":["crypto.>"],"publish":["fx.EUR-USD"]}),
            SECRET,
        );
        let p = verify(&t, SECRET, 1000).unwrap();
        assert_eq!(p.sub, "ann");
        assert_eq!(p.exp, Some(2000));
        let pat = |s| Pattern::parse(s).unwrap();
        assert!(p.subscribe.allows(&pat("crypto.BTC-USD")));
        assert!(p.subscribe.allows(&pat("crypto.*")));
        assert!(!p.subscribe.allows(&pat(">")));
        assert!(!p.subscribe.allows(&pat("fx.*")));
        assert!(
            p.publish
                .allows_topic(&tickwire_proto::Topic::parse("fx.EUR-USD").unwrap())
        );
        assert!(
            !p.publish
                .allows_topic(&tickwire_proto::Topic::parse("fx.GBP-USD").unwrap())
        );
    }

    #[test]
    fn exp_is_enforced_to_the_second() {
        let t = token(serde_json::json!({"sub":"a","exp":1000}), SECRET);
        assert!(verify(&t, SECRET, 999).is_ok());
        assert_eq!(verify(&t, SECRET, 1000), Err(AuthError::Expired));
    }

    #[test]
    fn bad_signature_algorithm_and_claims_are_refused() {
        let t = token(
            serde_json::json!({"sub":"a","exp":2000}),
            b"another secret..",
        );
        assert_eq!(verify(&t, SECRET, 1000), Err(AuthError::Unknown));
        let t = token(serde_json::json!({"exp":2000}), SECRET);
        assert!(matches!(
            verify(&t, SECRET, 1000),
            Err(AuthError::Malformed(_))
        ));
        let t = token(
            serde_json::json!({"sub":"a","exp":2000,"subscribe":["a..b"]}),
            SECRET,
        );
        assert!(matches!(
            verify(&t, SECRET, 1000),
            Err(AuthError::Malformed(_))
        ));
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub":"a","exp":2000}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(verify(&hs512, SECRET, 1000).is_err());
        assert!(verify("a.b.c", SECRET, 1000).is_err());
    }
}
