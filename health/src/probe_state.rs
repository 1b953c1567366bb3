//! Active-check state per endpoint.
