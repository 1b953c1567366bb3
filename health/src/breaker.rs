//! Circuit breakers.
