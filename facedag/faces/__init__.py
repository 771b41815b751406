"""Seeing faces: detection and tracking, alignment, pose/lighting/expression features, smoothing."""
