"""Deployment: what is served and how a new model replaces the champion."""
