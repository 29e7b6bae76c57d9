//! Runnable examples of HCP's Rust API. The README's Rust blocks are doctests of this crate, and
//! CI runs every file in `examples/`.
#![doc = include_str!("../README.md")]
