"""Vision encoders."""
