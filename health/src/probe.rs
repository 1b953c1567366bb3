//! Active probes on monoio.
