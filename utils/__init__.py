"""Helpers for the LeakyReLU-ResNet50 deepfake-face study; notebooks stay a few calls into these modules."""
