//! Gateway authentication: a bearer token in the `authorization` metadata,
//! checked against `SWITCHBOARD_API_TOKENS`.
//!
//! Several tokens may be valid at once, so a token is rotated by adding the
//! new one, moving the gateways over, then removing the old one. Tokens are
//! compared as SHA-256 digests in constant time, and every configured token
//! is compared on every request, so neither the timing nor the position of
//! a match says anything about the tokens. The health service is not behind
//! this check (load balancers probe it without credentials); everything else
//! is.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Code, Request, Status};

use super::status::refusal;
use crate::telemetry::series::Unauthenticated;

/// Shortest accepted token: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The configured tokens, as digests.
#[derive(Clone)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.digests.len())
            .finish()
    }
}

/// A token too short to be a secret, by its position (the token itself is
/// never shown).
#[derive(Debug, thiserror::Error)]
#[error("SWITCHBOARD_API_TOKENS: token {position} is shorter than {MIN_TOKEN_LEN} characters")]
pub struct ShortToken {
    pub position: usize,
}

impl Tokens {
    /// Parses `SWITCHBOARD_API_TOKENS`: tokens separated by commas (spaces
    /// around them ignored). Refuses short tokens, naming only their position.
    pub fn parse(raw: &SecretString) -> Result<Self, ShortToken> {
        let mut digests = Vec::new();
        for (position, token) in raw.expose_secret().split(',').map(str::trim).enumerate() {
            if token.is_empty() {
                continue;
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(ShortToken {
                    position: position + 1,
                });
            }
            digests.push(digest(token));
        }
        Ok(Self { digests })
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the tokens.
    fn accepts(&self, presented: &str) -> bool {
        let presented = digest(presented);
        // no early exit: every token is compared
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, token| {
                found | token.ct_eq(&presented)
            })
            .into()
    }

    /// A tonic interceptor that lets through requests bearing one of the
    /// tokens and answers the rest UNAUTHENTICATED. Without tokens it lets
    /// everything through: the configuration allows that only on loopback
    /// or when told to (`ServeConfig::validate`).
    pub fn interceptor(self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        move |request: Request<()>| {
            if self.is_empty() {
                return Ok(request);
            }
            let presented = request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "));
            match presented {
                Some(token) if self.accepts(token.trim()) => Ok(request),
                Some(_) => Err(refuse(
                    Unauthenticated::InvalidToken,
                    "the bearer token is not valid",
                )),
                None => Err(refuse(
                    Unauthenticated::MissingToken,
                    "an `authorization: Bearer <token>` header is required",
                )),
            }
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn refuse(reason: Unauthenticated, message: &'static str) -> Status {
    let reason: &'static str = reason.into();
    metrics::counter!("switchboard_grpc_unauthenticated_total", "reason" => reason).increment(1);
    refusal(Code::Unauthenticated, reason, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::status::REASON_KEY;

    fn tokens(raw: &str) -> Tokens {
        Tokens::parse(&SecretString::from(raw.to_string())).unwrap()
    }

    #[test]
    fn any_configured_token_is_accepted_and_nothing_else() {
        let tokens = tokens(" old-token-0123456789 , new-token-0123456789,");
        assert!(tokens.accepts("old-token-0123456789"));
        assert!(tokens.accepts("new-token-0123456789"));
        assert!(!tokens.accepts("new-token-012345678"));
        assert!(!tokens.accepts(""));
        assert!(!tokens.accepts("old-token-0123456789,new-token-0123456789"));
    }

    #[test]
    fn short_tokens_are_refused_without_echoing_them() {
        let error = Tokens::parse(&SecretString::from(
            "a-long-enough-token-1,tiny".to_string(),
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("token 2"), "{error}");
        assert!(!error.contains("tiny"), "{error}");
        assert!(tokens("").is_empty());
    }

    #[test]
    fn the_interceptor_wants_a_bearer_token() {
        let mut check = tokens("gateway-token-0123456789").interceptor();
        let with = |value: &str| {
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
            request
        };
        assert!(check(with("Bearer gateway-token-0123456789")).is_ok());
        let wrong = check(with("Bearer gateway-token-9876543210")).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let basic = check(with("Basic gateway-token-0123456789")).unwrap_err();
        assert_eq!(basic.code(), tonic::Code::Unauthenticated);
        let missing = check(Request::new(())).unwrap_err();
        assert_eq!(missing.metadata().get(REASON_KEY).unwrap(), "missing_token");
    }
}
