//! Passive outlier detection.
