//! HCP HTTP client (being written).
