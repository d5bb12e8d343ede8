//! HS256 JWTs with `sub`, `exp`, `nbf`, `subscribe` and `publish` claims,
//! checked with the `jsonwebtoken` crate (signature, algorithm) and here
//! (times). `exp` is enforced to the second, no leeway; `nbf`, when present,
//! too. Both are RFC 7519 NumericDates: whole or fractional seconds.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use tickwire_proto::Pattern;

use crate::auth::{AuthError, Principal, Rights};

/// 2^64: the first number of seconds that no `u64` holds. A NumericDate at
/// or above it (`1e300`) is refused as malformed, as a larger integer is.
const NUMERIC_DATE_LIMIT: f64 = 18_446_744_073_709_551_616.0;

/// An RFC 7519 NumericDate: seconds since the Unix epoch, maybe with a
/// fraction (`2000000000.5`). Negative, non-finite or over-`u64` values are
/// refused while the claims are read, so no comparison ever sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NumericDate {
    /// Whole seconds, rounded down: what `authenticated.exp` shows.
    secs: u64,
    /// The instant in milliseconds, rounded down and up (equal for whole
    /// seconds); saturating at `u64::MAX`, which no clock reaches.
    ms_floor: u64,
    ms_ceil: u64,
}

impl NumericDate {
    fn whole(secs: u64) -> NumericDate {
        let ms = secs.saturating_mul(1000);
        NumericDate {
            secs,
            ms_floor: ms,
            ms_ceil: ms,
        }
    }
}

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NumericDate;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a NumericDate: seconds since the Unix epoch, 0 or more")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NumericDate, E> {
                Ok(NumericDate::whole(v))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NumericDate, E> {
                u64::try_from(v)
                    .map(NumericDate::whole)
                    .map_err(|_| E::custom("a NumericDate may not be negative"))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<NumericDate, E> {
                // NaN is in no range: refused here too (-0.0 is 0).
                if !(0.0..NUMERIC_DATE_LIMIT).contains(&v) {
                    return Err(E::custom(
                        "a NumericDate must be a finite number of seconds, 0 to 2^64",
                    ));
                }
                // `as` from f64 saturates (no UB, no panic); the product can
                // only pass 2^64 ms for dates past what any clock reads.
                let ms = v * 1000.0;
                Ok(NumericDate {
                    secs: v.floor() as u64,
                    ms_floor: ms.floor() as u64,
                    ms_ceil: ms.ceil() as u64,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: NumericDate,
    #[serde(default)]
    nbf: Option<NumericDate>,
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

/// Verifies `token` with `secret` at `now_ms` (milliseconds since the Unix epoch).
///
/// # Errors
/// [`AuthError`] for a bad signature, another algorithm, a malformed token or
/// claim (a negative or out-of-range `exp` or `nbf` included), an `exp` at or
/// before `now_ms`, or an `nbf` after it.
pub fn verify(token: &str, secret: &[u8], now_ms: u64) -> Result<Principal, AuthError> {
    let mut v = Validation::new(Algorithm::HS256);
    // exp and nbf are checked below, to the millisecond of a fractional
    // NumericDate: the crate's checks allow `exp == now`, round a fraction
    // and read the system clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    // `exp` is required by `Claims` itself, whose error names the bad value.
    v.set_required_spec_claims(&["sub"]);
    let data =
        decode::<Claims>(token, &DecodingKey::from_secret(secret), &v).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::Unknown,
                _ => AuthError::Malformed(e.to_string()),
            }
        })?;
    let c = data.claims;
    if c.exp.ms_floor <= now_ms {
        return Err(AuthError::Expired);
    }
    // RFC 7519 4.1.5: not to be accepted before `nbf` (at it, it is).
    if c.nbf.is_some_and(|nbf| nbf.ms_ceil > now_ms) {
        return Err(AuthError::NotYetValid);
    }
    Ok(Principal {
        subscribe: rights(&c.subscribe, "subscribe")?,
        publish: rights(&c.publish, "publish")?,
        sub: c.sub,
        exp: Some(c.exp.secs),
        expires_at_ms: Some(c.exp.ms_floor),
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
        let p = verify(&t, SECRET, 1_000_000).unwrap();
        assert_eq!(p.sub, "ann");
        assert_eq!(p.exp, Some(2000));
        assert_eq!(p.expires_at_ms, Some(2_000_000));
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
        assert!(verify(&t, SECRET, 999_999).is_ok());
        assert_eq!(verify(&t, SECRET, 1_000_000), Err(AuthError::Expired));
    }

    #[test]
    fn bad_signature_algorithm_and_claims_are_refused() {
        let t = token(
            serde_json::json!({"sub":"a","exp":2000}),
            b"another secret..",
        );
        assert_eq!(verify(&t, SECRET, 1_000_000), Err(AuthError::Unknown));
        let t = token(serde_json::json!({"exp":2000}), SECRET);
        assert!(matches!(
            verify(&t, SECRET, 1_000_000),
            Err(AuthError::Malformed(_))
        ));
        let t = token(
            serde_json::json!({"sub":"a","exp":2000,"subscribe":["a..b"]}),
            SECRET,
        );
        assert!(matches!(
            verify(&t, SECRET, 1_000_000),
            Err(AuthError::Malformed(_))
        ));
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub":"a","exp":2000}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(verify(&hs512, SECRET, 1_000_000).is_err());
        assert!(verify("a.b.c", SECRET, 1_000_000).is_err());
    }

    #[test]
    fn nbf_in_the_future_is_refused_until_it_comes() {
        let t = token(serde_json::json!({"sub":"a","exp":2000,"nbf":1500}), SECRET);
        assert_eq!(verify(&t, SECRET, 1_499_999), Err(AuthError::NotYetValid));
        assert!(verify(&t, SECRET, 1_500_000).is_ok());
        // Expired wins over not yet valid: neither is ever good again... or yet.
        let t = token(serde_json::json!({"sub":"a","exp":1000,"nbf":1500}), SECRET);
        assert_eq!(verify(&t, SECRET, 1_200_000), Err(AuthError::Expired));
    }

    #[test]
    fn fractional_exp_and_nbf_are_compared_to_the_millisecond() {
        let t = token(serde_json::json!({"sub":"a","exp":2000000000.5}), SECRET);
        let p = verify(&t, SECRET, 1_000_000).unwrap();
        // Shown in whole seconds (rounded down), enforced at the fraction.
        assert_eq!(p.exp, Some(2_000_000_000));
        assert_eq!(p.expires_at_ms, Some(2_000_000_000_500));
        assert!(verify(&t, SECRET, 2_000_000_000_499).is_ok());
        assert_eq!(
            verify(&t, SECRET, 2_000_000_000_500),
            Err(AuthError::Expired)
        );
        // nbf 1000.25: not at 1000.249 s, from 1000.250 s on.
        let t = token(
            serde_json::json!({"sub":"a","exp":2000,"nbf":1000.25}),
            SECRET,
        );
        assert_eq!(verify(&t, SECRET, 1_000_249), Err(AuthError::NotYetValid));
        assert!(verify(&t, SECRET, 1_000_250).is_ok());
        // A whole number written with an exponent is a float to the parser.
        let t = token(serde_json::json!({"sub":"a","exp":2e3}), SECRET);
        assert_eq!(verify(&t, SECRET, 1_000_000).unwrap().exp, Some(2000));
    }

    #[test]
    fn negative_and_absurd_times_are_refused_as_malformed() {
        let malformed = |claims: &str| {
            // Raw JSON text: serde_json::Value could not carry 1e400.
            let t = format!(
                "{}.{}",
                base64_url(br#"{"alg":"HS256","typ":"JWT"}"#),
                base64_url(claims.as_bytes())
            );
            let sig = sign(&t);
            let r = verify(&format!("{t}.{sig}"), SECRET, 1_000_000);
            assert!(matches!(r, Err(AuthError::Malformed(_))), "{claims}: {r:?}");
        };
        for claims in [
            r#"{"sub":"a","exp":-1}"#,
            r#"{"sub":"a","exp":-0.5}"#,
            r#"{"sub":"a","exp":1e300}"#,
            r#"{"sub":"a","exp":1e400}"#,
            r#"{"sub":"a","exp":18446744073709551616}"#,
            r#"{"sub":"a","exp":"2000"}"#,
            r#"{"sub":"a","exp":null}"#,
            r#"{"sub":"a"}"#,
            r#"{"sub":"a","exp":2000,"nbf":-3}"#,
            r#"{"sub":"a","exp":2000,"nbf":1e19999}"#,
            r#"{"sub":"a","exp":2000,"nbf":"soon"}"#,
        ] {
            malformed(claims);
        }
        // The largest integer is still "never" (as before), not an overflow.
        let t = token(serde_json::json!({"sub":"a","exp":u64::MAX}), SECRET);
        let p = verify(&t, SECRET, 1_000_000).unwrap();
        assert_eq!(p.exp, Some(u64::MAX));
        assert_eq!(p.expires_at_ms, Some(u64::MAX));
        // And a float just under 2^64 saturates the same way.
        let t = token(serde_json::json!({"sub":"a","exp":1.8e19}), SECRET);
        assert_eq!(
            verify(&t, SECRET, 1_000_000).unwrap().expires_at_ms,
            Some(u64::MAX)
        );
    }

    /// Unpadded base64url (RFC 4648 5), for tokens written by hand.
    fn base64_url(b: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | u32::from(c) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn the_hand_made_tokens_match_the_crate_s() {
        let claims = serde_json::json!({"sub":"a","exp":2000});
        let t = format!(
            "{}.{}",
            base64_url(br#"{"typ":"JWT","alg":"HS256"}"#),
            base64_url(claims.to_string().as_bytes())
        );
        let t = format!("{t}.{}", sign(&t));
        assert_eq!(verify(&t, SECRET, 1_000_000).unwrap().exp, Some(2000));
    }

    fn sign(signing_input: &str) -> String {
        jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .unwrap()
    }
}
