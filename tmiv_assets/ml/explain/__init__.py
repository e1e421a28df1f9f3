"""Explanations of fitted models."""
