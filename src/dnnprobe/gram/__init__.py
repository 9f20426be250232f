"""Per-layer Gram or covariance matrices from the activation file, and similarity (CKA, RDMs) from them."""
