//! HCP HTTP service (being written).
