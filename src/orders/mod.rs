//! Pre-order lifecycle.
