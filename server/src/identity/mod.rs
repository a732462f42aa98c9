//! Who is asking: buyers and organizers come with bearer tokens (JWT access
//! tokens) signed by the operator's identity provider, or by `flashtix
//! token` for a sale that has none. The sale only verifies them; it keeps no
//! passwords.
//!
//! - [`config`]: the flags, and the identity they configure;
//! - [`keys`]: key pairs, the public keys (a JWKS file), signing;
//! - [`tokens`]: the claims a token carries and their verification;
//! - [`limits`]: the per-buyer request rate limit.

pub mod config;
pub mod keys;
pub mod limits;
pub mod tokens;

/// The algorithms a sale may pin tokens to (jsonwebtoken's names).
pub use jsonwebtoken::Algorithm;
pub use keys::{PublicKeys, SigningKey};
pub use limits::BuyerLimits;
pub use tokens::{Access, Caller, TokenError, Verifier};

/// Who the tokens are for and who signs them, unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "flashtix";
pub const DEFAULT_ISSUER: &str = "flashtix";
