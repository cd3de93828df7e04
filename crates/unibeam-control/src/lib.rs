//! unibeam's control plane (being written).
#![forbid(unsafe_code)]
