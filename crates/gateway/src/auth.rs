//! Who a connection is and what it may do (PROTOCOL.md "Authentication").
//! Tokens are compared and checked here and never logged.

use std::collections::HashSet;

use tickwire_proto::{Pattern, Topic};

use crate::config::AuthConfig;

/// What a principal may publish to or subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rights {
    None,
    All,
    /// A request is allowed when one of these covers every topic it could match.
    Patterns(Vec<Pattern>),
}

impl Rights {
    pub fn allows(&self, p: &Pattern) -> bool {
        match self {
            Rights::None => false,
            Rights::All => true,
            Rights::Patterns(ps) => ps.iter().any(|r| r.covers(p)),
        }
    }

    pub fn allows_topic(&self, t: &Topic) -> bool {
        match self {
            Rights::None => false,
            Rights::All => true,
            Rights::Patterns(ps) => ps.iter().any(|r| r.matches(t.as_str())),
        }
    }
}

/// An authenticated (or anonymous) client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub sub: String,
    /// Expiry, whole seconds since the Unix epoch (a fractional `exp`
    /// rounded down): what `authenticated.exp` shows. `None` never expires.
    pub exp: Option<u64>,
    /// The instant the token stops being valid, ms since the Unix epoch:
    /// what the connection enforces. `None` never expires.
    pub expires_at_ms: Option<u64>,
    pub publish: Rights,
    pub subscribe: Rights,
}

impl Principal {
    /// No token, auth off: may subscribe to anything, publish nothing.
    pub fn anonymous() -> Principal {
        Principal {
            sub: "anonymous".into(),
            exp: None,
            expires_at_ms: None,
            publish: Rights::None,
            subscribe: Rights::All,
        }
    }

    fn publisher() -> Principal {
        Principal {
            sub: "publisher-key".into(),
            exp: None,
            expires_at_ms: None,
            publish: Rights::All,
            subscribe: Rights::All,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unknown token")]
    Unknown,
    #[error("token expired")]
    Expired,
    /// Before the token's `nbf` (not before).
    #[error("token not valid yet")]
    NotYetValid,
    #[error("malformed token: {0}")]
    Malformed(String),
}

/// Checks tokens against the configured keys and JWT secret.
#[derive(Debug)]
pub struct Auth {
    keys: HashSet<String>,
    jwt_secret: Option<Vec<u8>>,
    origins: Vec<String>,
}

impl Auth {
    pub fn new(cfg: &AuthConfig) -> Auth {
        Auth {
            // An empty key would make the empty token a publisher's.
            keys: cfg
                .publisher_keys
                .iter()
                .filter(|k| !k.is_empty())
                .cloned()
                .collect(),
            jwt_secret: cfg.jwt_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            origins: cfg.allowed_origins.clone(),
        }
    }

    /// With a JWT secret every connection must authenticate.
    pub fn required(&self) -> bool {
        self.jwt_secret.is_some()
    }

    /// Whether an upgrade with this `Origin` header may proceed.
    pub fn origin_allowed(&self, origin: Option<&[u8]>) -> bool {
        match origin {
            None => true,
            Some(_) if self.origins.is_empty() => true,
            Some(o) => self.origins.iter().any(|a| a.as_bytes() == o),
        }
    }

    /// # Errors
    /// [`AuthError`] when the token is neither a publisher key nor a valid JWT.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if self.keys.contains(token) {
            return Ok(Principal::publisher());
        }
        match &self.jwt_secret {
            Some(secret) if token.matches('.').count() == 2 => {
                crate::jwt::verify(token, secret, tickwire_proto::now_ms())
            }
            _ => Err(AuthError::Unknown),
        }
    }
}
