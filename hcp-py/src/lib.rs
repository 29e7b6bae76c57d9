//! HCP Python module (being written).
