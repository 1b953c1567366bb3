//! The AI gateway layer: canonical chat types, provider translation, streaming translation,
//! model catalogue and accounting. Pure transformations, separated from I/O; the engine wires
//! them to the network.
//!
//! Nothing is implemented here yet: the LLM gateway is issue #6 and lands after the engine
//! (issue #3) and failover (issue #4) it is built on.
#![forbid(unsafe_code)]
