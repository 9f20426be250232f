"""The probe: decoders, targets, folds, fold PCA, cross-validation, refits and statistics."""
